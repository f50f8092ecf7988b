using System.Text;
using System.Text.Json;

namespace PeftSharp.Evaluation;

/// <summary>
/// The known tasks. Names are LLM-Adapters' dataset folder names (matched without regard to case), plus story_cloze,
/// race, squad and multiple_choice. Commonsense tasks read LLM-Adapters' records or lm-evaluation-harness-style
/// multiple-choice records; see docs/evaluation.md for every layout.
/// </summary>
public static class EvalTasks
{
    /// <summary>
    /// Name of the commonsense suite (BoolQ, PIQA, SIQA, HellaSwag, WinoGrande, ARC-e, ARC-c, OBQA), as in LLM-Adapters.
    /// </summary>
    public const string CommonsenseSuite = "commonsense";
    /// <summary>Name of the math suite (GSM8K, AQuA, SVAMP, AddSub, MultiArith, SingleEq, MAWPS), as in LLM-Adapters.</summary>
    public const string MathSuite = "math";

    static readonly string[] Answers5 = ["answer1", "answer2", "answer3", "answer4", "answer5"];

    /// <summary>commonsense_evaluate.py's answer words per dataset, in its regex order.</summary>
    static readonly (string Name, string[] Words)[] Commonsense =
    [
        ("boolq", ["true", "false"]),
        ("piqa", ["solution1", "solution2"]),
        ("social_i_qa", Answers5),
        ("hellaswag", ["ending1", "ending2", "ending3", "ending4"]),
        ("winogrande", ["option1", "option2"]),
        ("ARC-Easy", Answers5),
        ("ARC-Challenge", Answers5),
        ("openbookqa", Answers5),
    ];

    static readonly string[] Math = ["gsm8k", "AQuA", "SVAMP", "AddSub", "MultiArith", "SingleEq", "mawps"];

    /// <summary>Every known task, in LLM-Adapters' table order.</summary>
    public static IReadOnlyList<EvalTask> All { get; } = BuildAll();

    /// <summary>The tasks of a suite ("commonsense" or "math"), in LLM-Adapters' table order.</summary>
    public static IReadOnlyList<EvalTask> Suite(string suite) => All.Where(t => t.Suite == suite).ToList();

    /// <summary>Whether <paramref name="name"/> is a suite name (any case) rather than a task.</summary>
    public static bool IsSuite(string name) =>
        name.Equals(CommonsenseSuite, StringComparison.OrdinalIgnoreCase) || name.Equals(MathSuite, StringComparison.OrdinalIgnoreCase);

    /// <summary>The task of that name (any case).</summary>
    /// <exception cref="PeftSharpException">Unknown name; the message lists the known ones.</exception>
    public static EvalTask Get(string name) =>
        All.FirstOrDefault(t => t.Name.Equals(name, StringComparison.OrdinalIgnoreCase))
        ?? throw new PeftSharpException($"--task: unknown task \"{name}\"; known tasks: {string.Join(", ", All.Select(t => t.Name))}, " +
                                        $"and the suites {CommonsenseSuite}, {MathSuite}");

    static List<EvalTask> BuildAll()
    {
        var tasks = new List<EvalTask>();
        foreach (var (name, words) in Commonsense)
            tasks.Add(new EvalTask(name, CommonsenseSuite, AnswerKind.Word, 32, (r, at) => CommonsenseItem(r, at, words)));
        foreach (var name in Math)
            tasks.Add(name == "AQuA"
                ? new EvalTask(name, MathSuite, AnswerKind.Letter, 256, AquaItem)
                : new EvalTask(name, MathSuite, AnswerKind.Number, 256, NumberItem));
        tasks.Add(new EvalTask("story_cloze", null, AnswerKind.Word, 32, StoryClozeItem));
        tasks.Add(new EvalTask("race", null, AnswerKind.Word, 32, RaceItem));
        tasks.Add(new EvalTask("squad", null, AnswerKind.Span, 32, SquadItem));
        tasks.Add(new EvalTask("multiple_choice", null, AnswerKind.Word, 32, (r, at) => MultipleChoiceRecord(r, at)));
        return tasks;
    }

    /// <summary>Loglik-mode context for LLM-Adapters records: the prompt followed by the start of the trained reply.</summary>
    public const string LlmAdaptersAnswerLead = "the correct answer is";

    static EvalItem CommonsenseItem(JsonElement r, RecordReader at, string[] words)
    {
        if (!RecordReader.Has(r, "instruction")) return MultipleChoiceRecord(r, at);
        string instruction = at.String(r, "instruction");
        string gold = at.String(r, "answer");
        var choices = AnswerFormat(instruction) ?? words.ToList();
        int goldIndex = choices.IndexOf(gold);
        string prompt = AlpacaPrompt.Build(instruction);
        return new EvalItem(prompt, gold, prompt + LlmAdaptersAnswerLead, choices, goldIndex, words, []);
    }

    /// <summary>The options listed after the last "Answer format:" of an LLM-Adapters instruction ("answer1/answer2/answer3").</summary>
    public static List<string>? AnswerFormat(string instruction)
    {
        int at = instruction.LastIndexOf("Answer format:", StringComparison.Ordinal);
        if (at < 0) return null;
        var options = instruction[(at + "Answer format:".Length)..].Split('/').Select(PythonText.Strip).Where(s => s.Length > 0).ToList();
        return options.Count >= 2 ? options : null;
    }

    static EvalItem NumberItem(JsonElement r, RecordReader at)
    {
        string instruction = at.String(r, "instruction");
        string gold = at.String(r, "answer");
        if (PythonText.ParseFloat(gold) is null) throw at.Error($"field \"answer\": expected a number, got \"{gold}\"");
        return new EvalItem(AlpacaPrompt.Build(instruction), gold, null, [], -1, [], []);
    }

    static readonly string[] Letters = ["A", "B", "C", "D", "E"];

    static EvalItem AquaItem(JsonElement r, RecordReader at)
    {
        string instruction = at.String(r, "instruction");
        string gold = at.String(r, "answer");
        string prompt = AlpacaPrompt.Build(instruction);
        // Loglik: the option letters, after the reply's lead as the training data writes it ("The answer is (D).").
        return new EvalItem(prompt, gold, prompt + "The answer is", Letters, Array.IndexOf(Letters, gold), Letters, []);
    }

    /// <summary>
    /// lm-evaluation-harness's multiple-choice document: <c>{"query", "choices", "gold"}</c> (the form its
    /// MultipleChoiceTask documents take; "context"/"question" are accepted for "query", "label"/"answer" for "gold").
    /// Loglik scores " " + choice after the query; generate mode asks for answer1..answerN in LLM-Adapters' style.
    /// </summary>
    static EvalItem MultipleChoiceRecord(JsonElement r, RecordReader at)
    {
        if (RecordReader.Has(r, "arguments")) return HarnessSample(r, at);
        string query = at.FirstString(r, "query", "context", "question");
        var choices = at.Strings(r, "choices");
        if (choices.Count < 2) throw at.Error($"field \"choices\": expected at least 2 choices, got {choices.Count}");
        string goldText = at.FirstString(r, "gold", "label", "answer");
        int gold = int.TryParse(goldText, out int g) ? g : -1;
        if (gold < 0 || gold >= choices.Count) throw at.Error($"field \"gold\": expected an index 0..{choices.Count - 1}, got {goldText}");
        return Lettered(query, "Please choose the correct answer to the question: ", choices, gold, "Answer", "answer", query);
    }

    /// <summary>
    /// A line of lm-evaluation-harness's <c>--log_samples</c> output for a multiple-choice task:
    /// <c>{"doc", "target", "arguments": [[context, continuation], ...]}</c>. The contexts and continuations are the
    /// harness's own strings, so loglik scores the very requests it made; <c>target</c> is the gold index (or the gold
    /// choice's text). A leading space shared by every continuation is taken as the delimiter, so acc_norm divides by
    /// the choice's length without it, as the harness does.
    /// </summary>
    static EvalItem HarnessSample(JsonElement r, RecordReader at)
    {
        var args = r.GetProperty("arguments");
        if (args.ValueKind != JsonValueKind.Array || args.GetArrayLength() < 2)
            throw at.Error("field \"arguments\": expected a list of at least 2 [context, continuation] pairs");
        var pairs = new List<(string Context, string Continuation)>();
        foreach (var a in args.EnumerateArray())
        {
            // Newer harness versions write {"gen_args_0": {"arg_0": context, "arg_1": continuation}}.
            var pair = a.ValueKind == JsonValueKind.Object && a.TryGetProperty("gen_args_0", out var g) ? g : a;
            string? ctx = null, cont = null;
            if (pair.ValueKind == JsonValueKind.Array && pair.GetArrayLength() >= 2 && pair[0].ValueKind == JsonValueKind.String && pair[1].ValueKind == JsonValueKind.String)
                (ctx, cont) = (pair[0].GetString(), pair[1].GetString());
            else if (pair.ValueKind == JsonValueKind.Object && pair.TryGetProperty("arg_0", out var c0) && pair.TryGetProperty("arg_1", out var c1)
                     && c0.ValueKind == JsonValueKind.String && c1.ValueKind == JsonValueKind.String)
                (ctx, cont) = (c0.GetString(), c1.GetString());
            if (ctx is null || cont is null) throw at.Error("field \"arguments\": expected [context, continuation] string pairs");
            pairs.Add((ctx, cont));
        }
        if (pairs.Any(p => p.Context != pairs[0].Context)) throw at.Error("field \"arguments\": the choices have different contexts");
        bool spaced = pairs.All(p => p.Continuation.StartsWith(' '));
        var choices = pairs.Select(p => spaced ? p.Continuation[1..] : p.Continuation).ToList();
        string target = at.String(r, "target");
        int gold = int.TryParse(target, out int g2) ? g2 : choices.IndexOf(PythonText.Strip(target));
        if (gold < 0 || gold >= choices.Count) throw at.Error($"field \"target\": expected a choice index 0..{choices.Count - 1} or a choice's text, got \"{target}\"");
        var item = Lettered(pairs[0].Context.TrimEnd(), "Please choose the correct answer to the question: ", choices, gold, "Answer", "answer", pairs[0].Context);
        return item with { ChoiceDelimiter = spaced ? " " : "" };
    }

    /// <summary>A generate-mode question in LLM-Adapters' commonsense style, with loglik context <paramref name="context"/>.</summary>
    static EvalItem Lettered(string question, string lead, IReadOnlyList<string> choices, int gold, string label, string word, string context)
    {
        var instruction = new StringBuilder(lead).Append(question).Append("\n\n");
        for (int i = 0; i < choices.Count; i++) instruction.Append(i > 0 ? " " : "").Append($"{label}{i + 1}: {choices[i]}");
        var words = Enumerable.Range(1, choices.Count).Select(i => $"{word}{i}").ToList();
        instruction.Append("\n\nAnswer format: ").Append(string.Join('/', words));
        return new EvalItem(AlpacaPrompt.Build(instruction.ToString()), words[gold], context, choices, gold, words, []);
    }

    /// <summary>
    /// Story cloze: four sentences and two candidate endings (Hugging Face's story_cloze fields input_sentence_1..4,
    /// sentence_quiz1/2, answer_right_ending, or the original CSV's InputSentence1..4, RandomFifthSentenceQuiz1/2,
    /// AnswerRightEnding). Loglik: the endings after the joined sentences, as lm-evaluation-harness's storycloze task.
    /// </summary>
    static EvalItem StoryClozeItem(JsonElement r, RecordReader at)
    {
        var sentences = Enumerable.Range(1, 4).Select(i => at.FirstString(r, $"input_sentence_{i}", $"InputSentence{i}")).ToList();
        string[] endings = [at.FirstString(r, "sentence_quiz1", "RandomFifthSentenceQuiz1"), at.FirstString(r, "sentence_quiz2", "RandomFifthSentenceQuiz2")];
        string answer = at.FirstString(r, "answer_right_ending", "AnswerRightEnding");
        if (answer is not ("1" or "2")) throw at.Error($"field \"answer_right_ending\": expected 1 or 2, got {answer}");
        string story = string.Join(' ', sentences);
        return Lettered(story, "Please choose the correct ending to complete the given story: ", endings, answer == "1" ? 0 : 1, "Ending", "ending", story);
    }

    /// <summary>RACE-style reading comprehension: <c>{"article", "question", "options": [4], "answer": "A".."D"}</c>.</summary>
    static EvalItem RaceItem(JsonElement r, RecordReader at)
    {
        string article = at.String(r, "article"), question = at.String(r, "question");
        var options = at.Strings(r, "options");
        if (options.Count < 2) throw at.Error($"field \"options\": expected at least 2 options, got {options.Count}");
        string answer = at.String(r, "answer");
        int gold = answer.Length == 1 ? answer[0] - 'A' : -1;
        if (gold < 0 || gold >= options.Count) throw at.Error($"field \"answer\": expected a letter A..{(char)('A' + options.Count - 1)}, got \"{answer}\"");
        string context = $"Article: {article}\n\nQuestion: {question}\n\nAnswer:";
        return Lettered($"{question}\n\nArticle: {article}", "Please choose the correct answer to the question based on the article: ",
                        options, gold, "Answer", "answer", context);
    }

    /// <summary>
    /// SQuAD-style extractive question: <c>{"context", "question", "answers"}</c> where answers is SQuAD's
    /// <c>{"text": [...]}</c> or a list of strings. Generate mode only.
    /// </summary>
    static EvalItem SquadItem(JsonElement r, RecordReader at)
    {
        string context = at.String(r, "context"), question = at.String(r, "question");
        if (!r.TryGetProperty("answers", out var answers)) throw at.Error("missing field \"answers\"");
        IReadOnlyList<string> refs = answers.ValueKind == JsonValueKind.Object ? at.Strings(answers, "text")
            : answers.ValueKind == JsonValueKind.Array ? at.Strings(r, "answers")
            : throw at.Error($"field \"answers\": expected {{\"text\": [...]}} or a list of strings, got {RecordReader.Describe(answers)}");
        string prompt = AlpacaPrompt.Build($"Answer the question with a short span copied from the passage. Question: {question}", context);
        return new EvalItem(prompt, refs.Count > 0 ? refs[0] : "", null, [], -1, [], refs);
    }
}
