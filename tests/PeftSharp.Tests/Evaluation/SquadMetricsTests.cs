using PeftSharp.Evaluation;

namespace PeftSharp.Tests.Evaluation;

/// <summary>SQuAD exact match and F1 against values computed by hand from the official script's definitions.</summary>
public class SquadMetricsTests
{
    [Theory]
    [InlineData("The Eiffel Tower!", "eiffel tower", 1.0)]   // case, article and punctuation removed
    [InlineData("an  apple", "Apple.", 1.0)]
    [InlineData("Paris, France", "Paris", 0.0)]
    [InlineData("", "", 1.0)]
    [InlineData("the", "", 1.0)]                              // normalises to empty
    public void ExactMatch(string prediction, string reference, double expected) =>
        Assert.Equal(expected, SquadMetrics.ExactMatch(prediction, reference));

    [Fact]
    public void F1ByHand()
    {
        // pred tokens [in, paris, france], gold [paris]: common 1, precision 1/3, recall 1 → F1 = 2·(1/3)/(4/3) = 0.5
        Assert.Equal(0.5, SquadMetrics.F1("in Paris, France", "Paris"), 12);
        // pred [cat, cat, sat], gold [cat, sat, on, mat]: common = min(2,1) + 1 = 2, P = 2/3, R = 2/4 → F1 = 4/7
        Assert.Equal(4.0 / 7.0, SquadMetrics.F1("the cat cat sat", "a cat sat on the mat"), 12);
        Assert.Equal(0.0, SquadMetrics.F1("dog", "cat"));
        Assert.Equal(0.0, SquadMetrics.F1("", "cat"));             // empty against non-empty
        Assert.Equal(1.0, SquadMetrics.F1("An", "the"));           // both empty after normalising
    }

    [Fact]
    public void BestOverReferences()
    {
        string[] refs = ["Denver Broncos", "the Broncos", "Broncos"];
        Assert.Equal(1.0, SquadMetrics.BestExactMatch("Broncos", refs));
        // "Denver" vs "Denver Broncos": P = 1, R = 1/2 → 2/3; against the others 0.
        Assert.Equal(2.0 / 3.0, SquadMetrics.BestF1("Denver", refs), 12);
    }

    [Fact]
    public void NormalizeFollowsTheOfficialOrder()
    {
        Assert.Equal("hello world", SquadMetrics.Normalize("  The Hello,   World!! "));
        Assert.Equal("theory", SquadMetrics.Normalize("Theory")); // "the" only as a whole word
        Assert.Equal("1000", SquadMetrics.Normalize("$1,000"));
    }
}
