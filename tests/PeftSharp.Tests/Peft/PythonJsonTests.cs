using System.Text.Json.Nodes;
using PeftSharp.Peft;

namespace PeftSharp.Tests.Peft;

public class PythonJsonTests
{
    // expected strings are what CPython's repr(float) / json.dumps prints for the same double
    [Theory]
    [InlineData(0.0, "0.0")]
    [InlineData(-0.0, "-0.0")]
    [InlineData(0.05, "0.05")]
    [InlineData(0.1, "0.1")]
    [InlineData(1e-05, "1e-05")]
    [InlineData(0.0001, "0.0001")]
    [InlineData(1.5e-07, "1.5e-07")]
    [InlineData(2.0, "2.0")]
    [InlineData(1e15, "1000000000000000.0")]
    [InlineData(1e16, "1e+16")]
    [InlineData(1e22, "1e+22")]
    [InlineData(123456780000000.0, "123456780000000.0")]
    [InlineData(1.2345678901234568e17, "1.2345678901234568e+17")]
    [InlineData(0.30000000000000004, "0.30000000000000004")]
    [InlineData(5e-324, "5e-324")]
    [InlineData(1.7976931348623157e308, "1.7976931348623157e+308")]
    [InlineData(-2.5, "-2.5")]
    [InlineData(double.PositiveInfinity, "Infinity")]
    [InlineData(double.NaN, "NaN")]
    public void FloatRepr_MatchesPython(double value, string expected) =>
        Assert.Equal(expected, PythonJson.FloatRepr(value));

    [Fact]
    public void Dumps_MatchesPythonIndentAndSeparators()
    {
        var node = JsonNode.Parse("""{"b": [], "a": {}, "c": [1, {"x": 0.05}], "d": 1e-05, "e": 2.0, "i": null, "j": true}""");
        Assert.Equal(
            "{\n  \"a\": {},\n  \"b\": [],\n  \"c\": [\n    1,\n    {\n      \"x\": 0.05\n    }\n  ],\n  \"d\": 1e-05,\n  \"e\": 2.0,\n  \"i\": null,\n  \"j\": true\n}",
            PythonJson.Dumps(node));
    }

    [Fact]
    public void Keys_SortByCodePoint_NotUtf16()
    {
        // Python: sorted(['\ue000', '\U0001F600']) == ['\ue000', '\U0001F600']; UTF-16 ordinal order is the reverse
        var obj = new JsonObject { ["\U0001F600"] = 1, ["\uE000"] = 2, ["b"] = 3, ["B"] = 4 };
        Assert.Equal("{\n  \"B\": 4,\n  \"b\": 3,\n  \"\\ue000\": 2,\n  \"\\ud83d\\ude00\": 1\n}", PythonJson.Dumps(obj));
    }
}
