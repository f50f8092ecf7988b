using System.Text.Json;
using PeftSharp.Jinja;

namespace PeftSharp.Tests.Jinja;

/// <summary>
/// Each template in Cases/jinja_cases.json rendered by our renderer gives exactly what Python's jinja2 gave
/// (with transformers' settings; the file is written by Cases/jinja_cases.py), including which ones fail.
/// </summary>
public class JinjaRendererTests
{
    static readonly string CasesFile = Path.Combine(AppContext.BaseDirectory, "Jinja", "Cases", "jinja_cases.json");

    public static IEnumerable<object[]> Cases()
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(CasesFile));
        int i = 0;
        foreach (var c in doc.RootElement.GetProperty("cases").EnumerateArray())
            yield return [i++, c.GetProperty("template").GetString()!];
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void Renders_as_python_jinja2(int index, string template)
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(CasesFile));
        var root = doc.RootElement;
        var c = root.GetProperty("cases")[index];
        var variables = ((OrderedDictionary<string, object?>)JinjaValues.FromJson(root.GetProperty("variables"))!)
            .ToDictionary(p => p.Key, p => p.Value);
        var error = c.GetProperty("error").GetString();
        if (error is null)
        {
            string expected = c.GetProperty("expected").GetString()!;
            Assert.Equal(expected, JinjaTemplate.Parse(template).Render(variables));
        }
        else if (error == "syntax")
        {
            Assert.ThrowsAny<JinjaException>(() => JinjaTemplate.Parse(template));
        }
        else
        {
            var parsed = JinjaTemplate.Parse(template); // parses: the error is at render time
            var thrown = Assert.ThrowsAny<JinjaException>(() => parsed.Render(variables));
            if (error.StartsWith("TemplateError: ", StringComparison.Ordinal))
                Assert.Equal(error["TemplateError: ".Length..], Assert.IsType<JinjaRaisedException>(thrown).TemplateMessage);
        }
    }

    [Fact]
    public void Syntax_errors_name_the_line()
    {
        var e = Assert.ThrowsAny<JinjaException>(() => JinjaTemplate.Parse("line one\n{% if x %}\nthree\n{{ 1 + }}"));
        Assert.Equal(4, e.Line);
        Assert.StartsWith("line 4:", e.Message);
    }

    [Theory]
    [InlineData("{{ 2 ** 64 }}")]
    [InlineData("{{ 9223372036854775807 + 1 }}")]
    [InlineData("{{ -9223372036854775807 - 2 }}")]
    [InlineData("{{ 4294967296 * 4294967296 }}")]
    [InlineData("{{ (-9223372036854775807 - 1) | abs }}")]
    [InlineData("{{ -(-9223372036854775807 - 1) }}")]
    [InlineData("{{ 1e300 | int }}")]
    [InlineData("{{ '99999999999999999999' | int }}")]
    public void Integer_overflow_is_an_error_not_a_wrong_number(string template)
    {
        // Python's integers are unbounded; ours are 64-bit, and a wrapped-around result would be silently wrong.
        var parsed = JinjaTemplate.Parse(template);
        Assert.ThrowsAny<JinjaException>(() => parsed.Render(new Dictionary<string, object?>()));
        Assert.ThrowsAny<JinjaException>(() => JinjaTemplate.Parse("{{ 9223372036854775808 }}"));
    }

    [Fact]
    public void Generation_blocks_report_their_spans()
    {
        var t = JinjaTemplate.Parse("{% for m in ms %}<{{ m }}>{% generation %}[{{ m }}]{% endgeneration %}{% endfor %}");
        Assert.True(t.HasGenerationBlocks);
        var (text, spans) = t.RenderWithGenerationSpans(new Dictionary<string, object?> { ["ms"] = new List<object?> { "a", "bb" } });
        Assert.Equal("<a>[a]<bb>[bb]", text);
        Assert.Equal([(3, 6), (10, 14)], spans);
        Assert.False(JinjaTemplate.Parse("{{ x }}").HasGenerationBlocks);
    }
}
