using PeftSharp.Evaluation;

namespace PeftSharp.Tests.Evaluation;

/// <summary>Reading test files: LLM-Adapters' samples, other layouts, and errors that name the file and line.</summary>
public class EvalDataTests
{
    static string Sample(string task) => Path.Combine(AppContext.BaseDirectory, "Evaluation", "Data", "llm-adapters", task, "test.json");

    [Fact]
    public void ReadsLlmAdaptersSamples()
    {
        var boolq = EvalData.Load(Sample("boolq"), EvalTasks.Get("boolq"));
        Assert.Equal(4, boolq.Count);
        Assert.Equal("false", boolq[0].Gold);
        Assert.Equal(["true", "false"], boolq[0].Choices);   // from "Answer format: true/false"
        Assert.Equal(1, boolq[0].GoldIndex);
        var arc = EvalData.Load(Sample("ARC-Challenge"), EvalTasks.Get("arc-challenge"), limit: 2);
        Assert.Equal(2, arc.Count);
        Assert.Equal(["answer1", "answer2", "answer3", "answer4"], arc[0].Choices);
        var aqua = EvalData.Load(Sample("AQuA"), EvalTasks.Get("AQuA"));
        Assert.Equal("A", aqua[0].Gold);
        Assert.False(EvalTasks.Get("gsm8k").HasChoices);
    }

    [Fact]
    public void MalformedJsonNamesFileAndLine()
    {
        using var dir = new TempDir();
        dir.Write("bad.jsonl", "{\"query\": \"q\", \"choices\": [\"a\", \"b\"], \"gold\": 0}\n\n{\"query\": \"q\", \"choices\": [\"a\"], \"gold\": 0}\n");
        var e = Assert.Throws<PeftSharpException>(() => EvalData.Load(dir.File("bad.jsonl"), EvalTasks.Get("multiple_choice")));
        Assert.StartsWith($"{dir.File("bad.jsonl")}:3:", e.Message);
        dir.Write("broken.json", "[\n  {\"instruction\": \"a\", \"answer\": \"1\"},\n  {\"instruction\": \"b\", \"answer\": }\n]");
        e = Assert.Throws<PeftSharpException>(() => EvalData.Load(dir.File("broken.json"), EvalTasks.Get("gsm8k")));
        Assert.StartsWith($"{dir.File("broken.json")}:3:", e.Message);
        dir.Write("missing.json", "[\n  {\"instruction\": \"a\", \"answer\": \"1\"},\n\n  {\"instruction\": \"b\"}\n]");
        e = Assert.Throws<PeftSharpException>(() => EvalData.Load(dir.File("missing.json"), EvalTasks.Get("gsm8k")));
        Assert.Equal($"{dir.File("missing.json")}:4: missing field \"answer\"", e.Message);
    }

    [Fact]
    public void UnknownTaskListsTheKnownOnes()
    {
        var e = Assert.Throws<PeftSharpException>(() => EvalTasks.Get("boolq2"));
        foreach (var name in new[] { "boolq", "piqa", "social_i_qa", "hellaswag", "winogrande", "ARC-Easy", "ARC-Challenge", "openbookqa",
                                     "gsm8k", "AQuA", "SVAMP", "AddSub", "MultiArith", "SingleEq", "mawps" })
            Assert.Contains(name, e.Message);
    }

    [Fact]
    public void StoryClozeRaceAndSquadLayouts()
    {
        using var dir = new TempDir();
        dir.Write("cloze.jsonl", """{"InputSentence1": "A.", "InputSentence2": "B.", "InputSentence3": "C.", "InputSentence4": "D.", "RandomFifthSentenceQuiz1": "E1.", "RandomFifthSentenceQuiz2": "E2.", "AnswerRightEnding": 2}""");
        var cloze = EvalData.Load(dir.File("cloze.jsonl"), EvalTasks.Get("story_cloze"))[0];
        Assert.Equal("A. B. C. D.", cloze.Context);
        Assert.Equal(["E1.", "E2."], cloze.Choices);
        Assert.Equal(1, cloze.GoldIndex);
        Assert.Equal("ending2", cloze.Gold);
        dir.Write("race.jsonl", """{"article": "Art.", "question": "Q?", "options": ["w", "x", "y", "z"], "answer": "C"}""");
        var race = EvalData.Load(dir.File("race.jsonl"), EvalTasks.Get("race"))[0];
        Assert.Equal(2, race.GoldIndex);
        Assert.Equal("answer3", race.Gold);
        dir.Write("squad.json", """{"version": "v2.0", "data": [{"title": "T", "paragraphs": [{"context": "Ctx.", "qas": [{"id": "1", "question": "Q?", "answers": [{"text": "Ctx", "answer_start": 0}]}]}]}]}""");
        var squad = EvalData.Load(dir.File("squad.json"), EvalTasks.Get("squad"));
        Assert.Equal(["Ctx"], squad[0].References);
        var verdict = GenerationJudge.Judge(EvalTasks.Get("squad"), squad[0], "ctx.\nmore text");
        Assert.Equal(1.0, verdict.ExactMatch);
    }

    [Fact]
    public void HarnessLogSamplesKeepTheHarnessStrings()
    {
        using var dir = new TempDir();
        // A --log_samples line as lm-evaluation-harness writes it for piqa (shortened).
        dir.Write("samples.jsonl", """{"doc_id": 0, "doc": {"goal": "g"}, "target": 1, "arguments": [["Question: g\nAnswer:", " sol one"], ["Question: g\nAnswer:", " sol two!"]], "resps": []}""");
        var item = EvalData.Load(dir.File("samples.jsonl"), EvalTasks.Get("piqa"))[0];
        Assert.Equal("Question: g\nAnswer:", item.Context);
        Assert.Equal(["sol one", "sol two!"], item.Choices);   // the shared leading space is the delimiter
        Assert.Equal(" ", item.ChoiceDelimiter);
        Assert.Equal(1, item.GoldIndex);
        var seen = new List<string>();
        Evaluator.RunLoglik(EvalTasks.Get("piqa"), [item], (ctx, conts) => { seen.AddRange(conts); return [-1.0, -2.0]; });
        Assert.Equal([" sol one", " sol two!"], seen);         // scored exactly as the harness requested
    }
}
