using System.Text.RegularExpressions;
using PeftSharp.Tests.Tokenization;
using PeftSharp.Tokenization;
using PeftSharp.Training;

namespace PeftSharp.Tests.Training;

/// <summary>
/// <c>messages</c> JSONL with the tokenizer's chat template: the text is the template's rendering (as
/// transformers' apply_chat_template), tokenized as one text, with loss on the tokens holding reply characters.
/// Expected ids come from the naive reference BPE over hand-written renderings.
/// </summary>
public class ChatDataTests
{
    const int X = (int)CausalLMLoss.IgnoreIndex;
    const int ImStart = 1003, ImEnd = 1004;
    static readonly string TemplatesFolder = Path.Combine(AppContext.BaseDirectory, "Tokenization", "ChatTemplates");

    const string TwoTurns =
        "{\"messages\": [{\"role\": \"user\", \"content\": \"What is 2+2?\"}, {\"role\": \"assistant\", \"content\": \"4\"}, " +
        "{\"role\": \"user\", \"content\": \"And 3+3?\"}, {\"role\": \"assistant\", \"content\": \"6\"}]}\n";

    // The tiny byte-level BPE plus ChatML's two special tokens, with <|im_end|> as EOS and the given chat template.
    static ModelTokenizer ChatTokenizer(TempDir dir, string template)
    {
        dir.WriteJson("tokenizer.json", TinyBpe.TokenizerJson());
        dir.WriteJson("tokenizer_config.json", new Dictionary<string, object>
        {
            ["tokenizer_class"] = "GPT2Tokenizer",
            ["eos_token"] = "<|im_end|>",
            ["chat_template"] = template,
            ["added_tokens_decoder"] = new Dictionary<string, object>
            {
                [ImStart.ToString()] = new { content = "<|im_start|>", special = true },
                [ImEnd.ToString()] = new { content = "<|im_end|>", special = true },
            },
        });
        return ModelTokenizer.Load(dir.Path);
    }

    // Ids of hand-written pieces: special tokens by id, other text through the reference BPE; labels on reply pieces.
    static (List<int> Ids, List<int> Labels) Expected(params (string Text, bool Reply)[] pieces)
    {
        var ids = new List<int>();
        var labels = new List<int>();
        foreach (var (text, reply) in pieces)
            foreach (var part in Regex.Split(text, "(<\\|im_start\\|>|<\\|im_end\\|>|<\\|endoftext\\|>)").Where(p => p.Length > 0))
            {
                var partIds = part switch
                {
                    "<|im_start|>" => [ImStart],
                    "<|im_end|>" => [ImEnd],
                    "<|endoftext|>" => [TinyBpe.EndOfText],
                    _ => TinyBpe.ReferenceEncode(part),
                };
                ids.AddRange(partIds);
                labels.AddRange(reply ? partIds : partIds.Select(_ => X));
            }
        return (ids, labels);
    }

    [Fact]
    public void Qwen2TemplateRendersTheConversationAndTrainsOnEachReplyWithItsEndOfTurn()
    {
        using var dir = new TempDir();
        var tokenizer = ChatTokenizer(dir, File.ReadAllText(Path.Combine(TemplatesFolder, "qwen2.jinja")));
        dir.Write("chat.jsonl", TwoTurns);
        var data = InstructionData.LoadJsonl(dir.File("chat.jsonl"), tokenizer, 512);
        Assert.Empty(data.Warnings);
        var e = Assert.Single(data.Examples);
        // Qwen2's template adds its default system prompt; the reply span runs to the end of the rendering of messages[..i+1].
        var (ids, labels) = Expected(
            ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n", false),
            ("4<|im_end|>\n", true),
            ("<|im_start|>user\nAnd 3+3?<|im_end|>\n<|im_start|>assistant\n", false),
            ("6<|im_end|>\n", true));
        Assert.Equal(ids, e.InputIds);
        Assert.Equal(labels, e.Labels);
    }

    [Fact]
    public void GenerationBlocksDecideTheLossWhenTheTemplateHasThem()
    {
        using var dir = new TempDir();
        var tokenizer = ChatTokenizer(dir, File.ReadAllText(Path.Combine(TemplatesFolder, "hf-assistant-mask-test.jinja")));
        dir.Write("chat.jsonl", TwoTurns);
        var e = Assert.Single(InstructionData.LoadJsonl(dir.File("chat.jsonl"), tokenizer, 512).Examples);
        // {% generation %} holds content + <|im_end|>; the newline after it is outside.
        var (ids, labels) = Expected(
            ("<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n", false), ("4<|im_end|>", true),
            ("\n<|im_start|>user\nAnd 3+3?<|im_end|>\n<|im_start|>assistant\n", false), ("6<|im_end|>", true), ("\n", false));
        Assert.Equal(ids, e.InputIds);
        Assert.Equal(labels, e.Labels);
    }

    [Fact]
    public void ATokenHoldingPromptAndReplyCharactersIsTrainedOn()
    {
        using var dir = new TempDir();
        // "he" + "llo" render as "hello", one token of the tiny BPE: transformers' assistant mask marks it.
        var tokenizer = ChatTokenizer(dir, "{% for m in messages %}{{ m.content }}{% if m.role == 'assistant' %}{{ eos_token }}{% endif %}{% endfor %}");
        dir.Write("chat.jsonl", "{\"messages\": [{\"role\": \"user\", \"content\": \"he\"}, {\"role\": \"assistant\", \"content\": \"llo\"}]}\n");
        var e = Assert.Single(InstructionData.LoadJsonl(dir.File("chat.jsonl"), tokenizer, 512).Examples);
        var hello = TinyBpe.ReferenceEncode("hello");
        Assert.Single(hello);
        Assert.Equal(new[] { hello[0], ImEnd }, e.InputIds);
        Assert.Equal(new[] { hello[0], ImEnd }, e.Labels);
    }

    [Fact]
    public void SentencePieceTokenizersLabelTheReplyPiecesOfTheJointTokenization()
    {
        using var dir = new TempDir();
        TinySentencePiece.Write(dir.File("tokenizer.model"));
        dir.WriteJson("tokenizer_config.json", new Dictionary<string, object>
        {
            ["tokenizer_class"] = "LlamaTokenizer",
            ["bos_token"] = "<s>",
            ["eos_token"] = "</s>",
            ["chat_template"] = "{{ bos_token }}{% for m in messages %}{% if m.role == 'user' %}{{ m.content }}{% else %}{{ ' ' + m.content + eos_token }}{% endif %}{% endfor %}",
        });
        var tokenizer = ModelTokenizer.Load(dir.Path);
        dir.Write("chat.jsonl", "{\"messages\": [{\"role\": \"user\", \"content\": \"hello\"}, {\"role\": \"assistant\", \"content\": \"world\"}]}\n");
        var e = Assert.Single(InstructionData.LoadJsonl(dir.File("chat.jsonl"), tokenizer, 512).Examples);
        // "<s>hello world</s>": BOS, ▁hello, ▁world, EOS; the reply " world</s>" is the last two, nothing is added.
        int hello = TinySentencePiece.IdOf("▁hello"), world = TinySentencePiece.IdOf("▁world");
        Assert.Equal(new[] { TinySentencePiece.Bos, hello, world, TinySentencePiece.Eos }, e.InputIds);
        Assert.Equal(new[] { X, X, world, TinySentencePiece.Eos }, e.Labels);
    }

    [Fact]
    public void ATemplateThatRewritesEarlierTurnsTrainsOnTheLastReplyOnlyAndSaysSo()
    {
        using var dir = new TempDir();
        // Earlier replies become "[old]" once the conversation goes on (as Qwen3 drops old reasoning).
        var tokenizer = ChatTokenizer(dir,
            "{% for m in messages %}{% if m.role == 'assistant' and not loop.last %}[old]{% else %}{{ m.content }}{% endif %}|{% endfor %}");
        dir.Write("chat.jsonl",
            "{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}, {\"role\": \"assistant\", \"content\": \"b\"}, " +
            "{\"role\": \"user\", \"content\": \"c\"}, {\"role\": \"assistant\", \"content\": \"d\"}]}\n");
        var data = InstructionData.LoadJsonl(dir.File("chat.jsonl"), tokenizer, 512);
        var e = Assert.Single(data.Examples);
        var (ids, labels) = Expected(("a|[old]|c|", false), ("d|", true));
        Assert.Equal(ids, e.InputIds);
        Assert.Equal(labels, e.Labels);
        Assert.Contains(data.Warnings, w => w.Contains("only their last assistant reply"));
    }

    [Fact]
    public void AConversationTheTemplateRejectsNamesFileLineAndTheTemplatesMessage()
    {
        using var dir = new TempDir();
        var tokenizer = ChatTokenizer(dir, File.ReadAllText(Path.Combine(TemplatesFolder, "mistral-v0.1.jinja")));
        dir.Write("chat.jsonl", TwoTurns +
            "{\"messages\": [{\"role\": \"system\", \"content\": \"s\"}, {\"role\": \"user\", \"content\": \"u\"}, {\"role\": \"assistant\", \"content\": \"a\"}]}\n");
        var error = Assert.Throws<PeftSharpException>(() => InstructionData.LoadJsonl(dir.File("chat.jsonl"), tokenizer, 512));
        Assert.Equal($"{dir.File("chat.jsonl")}:2: the tokenizer's chat template rejects this conversation: " +
                     "Conversation roles must alternate user/assistant/user/assistant/...", error.Message);
    }

    [Fact]
    public void ATemplateThatDoesNotParseIsAOneLineError()
    {
        using var dir = new TempDir();
        var tokenizer = ChatTokenizer(dir, "{% for m in messages %}\n{{ m.content }");
        dir.Write("chat.jsonl", TwoTurns);
        var error = Assert.Throws<PeftSharpException>(() => InstructionData.LoadJsonl(dir.File("chat.jsonl"), tokenizer, 512));
        Assert.StartsWith("the tokenizer's chat template cannot be read: line 2:", error.Message);
        Assert.DoesNotContain('\n', error.Message);
    }
}
