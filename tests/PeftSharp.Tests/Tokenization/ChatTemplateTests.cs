using System.Text.Json;
using PeftSharp.Jinja;
using PeftSharp.Tokenization;

namespace PeftSharp.Tests.Tokenization;

/// <summary>
/// Real models' chat templates (ChatTemplates/*.jinja, sources in SOURCES.md) rendered by PeftSharp give exactly
/// what transformers' apply_chat_template gives: ChatTemplates/expected.json was written by Python's jinja2 with
/// transformers' environment (ChatTemplates/render_expected.py), including the templates' own errors.
/// </summary>
public class ChatTemplateTests
{
    static readonly string Folder = Path.Combine(AppContext.BaseDirectory, "Tokenization", "ChatTemplates");

    public static IEnumerable<object[]> Cases()
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(Folder, "expected.json")));
        int i = 0;
        foreach (var c in doc.RootElement.EnumerateArray())
        {
            yield return [i, $"{c.GetProperty("template").GetString()} case {c.GetProperty("case").GetString()} " +
                             $"agp={c.GetProperty("add_generation_prompt").GetBoolean()} #{i}"];
            i++;
        }
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void Renders_as_transformers(int index, string name)
    {
        _ = name;
        using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(Folder, "expected.json")));
        var c = doc.RootElement[index];
        string source = File.ReadAllText(Path.Combine(Folder, c.GetProperty("template").GetString()!));
        var tokens = c.GetProperty("variables").EnumerateObject()
            .Where(p => p.Value.ValueKind == JsonValueKind.String)
            .ToDictionary(p => p.Name, p => p.Value.GetString()!);
        var now = DateTime.Parse(c.GetProperty("strftime_now_fixed").GetString()!, System.Globalization.CultureInfo.InvariantCulture);
        var template = ChatTemplate.Parse(source, tokens, () => now);
        var messages = (List<object?>)JinjaValues.FromJson(c.GetProperty("messages"))!;
        bool addGenerationPrompt = c.GetProperty("add_generation_prompt").GetBoolean();

        if (c.GetProperty("error").GetString() is { } error)
        {
            var thrown = Assert.Throws<JinjaRaisedException>(() => template.Render(messages, addGenerationPrompt));
            Assert.Equal(error, thrown.TemplateMessage);
            return;
        }
        var (text, spans) = template.RenderWithGenerationSpans(messages, addGenerationPrompt);
        Assert.Equal(c.GetProperty("expected").GetString(), text);
        if (c.GetProperty("generation_spans") is { ValueKind: JsonValueKind.Array } expectedSpans)
            Assert.Equal(expectedSpans.EnumerateArray().Select(s => (s[0].GetInt32(), s[1].GetInt32())).ToList(), spans.ToList());
    }

    [Fact]
    public void Strftime_matches_python_for_the_directives_templates_use()
    {
        var t = new DateTime(2024, 7, 26, 9, 5, 3);
        // Python: datetime(2024, 7, 26, 9, 5, 3).strftime(...)
        Assert.Equal("26 Jul 2024", ChatTemplate.Strftime(t, "%d %b %Y"));
        Assert.Equal("Friday, July 26, 2024 09:05:03 AM (day 208) 100%", ChatTemplate.Strftime(t, "%A, %B %d, %Y %H:%M:%S %p (day %j) 100%%"));
    }
}
