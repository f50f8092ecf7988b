using System.Text.Json;
using PeftSharp.Evaluation;

namespace PeftSharp.Tests.Evaluation;

/// <summary>
/// LLM-Adapters' answer extraction: hand-written cases, and golden cases whose expected values were computed by
/// LLM-Adapters' own functions (Cases/llm_adapters_cases.py).
/// </summary>
public class AnswerExtractionTests
{
    [Theory]
    [InlineData("The answer is 42.", 42.0)]
    [InlineData("Total: 1,234,567 people", 1234567.0)]          // commas dropped before matching
    [InlineData("It fell to -12 degrees", -12.0)]               // negative
    [InlineData("so she pays $3.75 per cup", 3.75)]             // $ and a decimal
    [InlineData("We get 3, then 4, then 5 and finally 7", 7.0)] // several candidates: the last
    [InlineData("The answer is 18 cookies (she had 20 before).", 20.0)] // buried mid-text: still the last number wins
    [InlineData("It is 5. ", 5.0)]                              // "5." parses as 5
    [InlineData("10-4", -4.0)]                                  // the minus binds to the following number
    public void LastNumberFollowsTheRule(string response, double expected) =>
        Assert.Equal(expected, AnswerExtraction.LastNumber(response));

    [Theory]
    [InlineData("")]
    [InlineData("I do not know")]
    [InlineData("-")]
    public void NoNumberIsInfinityAndNeverRight(string response)
    {
        Assert.True(double.IsPositiveInfinity(AnswerExtraction.LastNumber(response)));
        Assert.False(AnswerExtraction.NumberMatches(0, AnswerExtraction.LastNumber(response)));
    }

    [Theory]
    [InlineData(18.0, 18.0009, true)]
    [InlineData(18.0, 18.002, false)]
    [InlineData(-3.5, -3.5, true)]
    public void NumbersMatchWithinOneThousandth(double gold, double predicted, bool right) =>
        Assert.Equal(right, AnswerExtraction.NumberMatches(gold, predicted));

    [Theory]
    [InlineData("The answer is (C).", "C")]
    [InlineData("After all, (B)", "A")]       // any capital A-E, even inside a word: "After" gives A
    [InlineData("the answer is e", "")]       // lower case does not count
    [InlineData("", "")]
    [InlineData("  D and E  ", "D")]
    public void AquaTakesTheFirstCapitalLetterAToE(string response, string expected) =>
        Assert.Equal(expected, AnswerExtraction.FirstOptionLetter(response));

    [Theory]
    [InlineData("the correct answer is answer2", "answer2")]
    [InlineData("answer3, not answer1", "answer3")]      // the first in the text, not the first alternative
    [InlineData("Answer2", "")]                          // case-sensitive
    [InlineData("", "")]
    public void CommonsenseTakesTheFirstAnswerWord(string response, string expected) =>
        Assert.Equal(expected, AnswerExtraction.FirstAnswerWord(response, ["answer1", "answer2", "answer3", "answer4", "answer5"]));

    [Fact]
    public void ResponseIsTheTextBetweenTheFirstAndSecondResponseMarker()
    {
        string prompt = AlpacaPrompt.Build("Q?");
        Assert.Equal("first", AnswerExtraction.ResponseText(prompt, " first \n### Response: second"));
        Assert.Equal("", AnswerExtraction.ResponseText(prompt, ""));
    }

    [Fact]
    public void PromptIsLlmAdaptersIndentedTemplate()
    {
        // As Python prints generate_prompt("Q?") from LLM-Adapters' evaluate.py: the f-string keeps its 16-space indentation.
        const string expected = "Below is an instruction that describes a task. Write a response that appropriately completes the request. \n\n" +
                                "                ### Instruction:\n                Q?\n\n                ### Response:\n                ";
        Assert.Equal(expected, AlpacaPrompt.Build("Q?"));
    }

    static JsonElement Golden() =>
        JsonDocument.Parse(File.ReadAllText(Path.Combine(AppContext.BaseDirectory, "Evaluation", "Cases", "llm_adapters_cases.json"))).RootElement;

    [Fact]
    public void ExtractionMatchesLlmAdaptersOwnFunctions()
    {
        var golden = Golden();
        int checkedCases = 0;
        foreach (var c in golden.GetProperty("cases").EnumerateArray())
        {
            string response = c.GetProperty("response").GetString()!;
            Assert.Equal(c.GetProperty("number").GetString(), GenerationJudge.PythonFloat(AnswerExtraction.LastNumber(response)));
            Assert.Equal(c.GetProperty("letter").GetString(), AnswerExtraction.FirstOptionLetter(response));
            foreach (var w in c.GetProperty("words").EnumerateObject())
            {
                var task = EvalTasks.Get(w.Name);
                // A record without "Answer format:" gets the task's own answer words, as commonsense_evaluate.py's regexes.
                using var record = JsonDocument.Parse("""{"instruction": "Q?", "input": "", "answer": "x"}""");
                var item = task.ReadItem(record.RootElement, new RecordReader("test.json", 1));
                Assert.Equal(w.Value.GetString(), AnswerExtraction.FirstAnswerWord(response, item.AnswerWords));
            }
            checkedCases++;
        }
        Assert.True(checkedCases >= 20);
        foreach (var p in golden.GetProperty("prompts").EnumerateArray())
            Assert.Equal(p.GetProperty("prompt").GetString(), AlpacaPrompt.Build(p.GetProperty("instruction").GetString()!));
    }
}
