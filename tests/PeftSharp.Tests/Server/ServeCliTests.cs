using System.Diagnostics;
using System.Text;
using System.Text.Json;
using PeftSharp.Tests.Cli;

namespace PeftSharp.Tests.Server;

/// <summary>`peftsharp serve` as a process: flag errors, and SIGTERM letting a running request finish.</summary>
public sealed class ServeCliTests(ServerFixture fixture) : IClassFixture<ServerFixture>
{
    [Fact]
    public void BadFlagsAreOneLineErrors()
    {
        var line = CliRunner.AssertUserError(CliRunner.Run("serve", "--model", fixture.ModelDir, "--allow-runtime-adapters"));
        Assert.Contains("--adapter-dir", line);
        line = CliRunner.AssertUserError(CliRunner.Run("serve", "--model", fixture.ModelDir, "--adapter", "nofolder"));
        Assert.Contains("NAME=DIR", line);
        line = CliRunner.AssertUserError(CliRunner.Run("serve", "--model", fixture.ModelDir, "--adapter", "x=" + Path.Combine(fixture.Root, "missing"), "--port", "0"));
        Assert.Contains("--adapter x", line);
    }

    [Fact]
    public async Task SigtermLetsTheRunningRequestFinishThenExits()
    {
        if (!OperatingSystem.IsLinux()) return;
        using var server = CliRunner.Start("serve", "--model", fixture.ModelDir, "--port", "0", "--adapter", "alpha=" + fixture.AdapterPath("alpha"));
        try
        {
            // The tool prints "serving ... on http://127.0.0.1:PORT; ..." on stderr once it listens.
            string? url = null;
            var stderr = new StringBuilder();
            var readUrl = Task.Run(async () =>
            {
                while (await server.StandardError.ReadLineAsync() is string line)
                {
                    stderr.AppendLine(line);
                    int at = line.IndexOf("http://127.0.0.1:", StringComparison.Ordinal);
                    if (line.StartsWith("serving ") && at >= 0) { url = line[at..].Split([';', ',', ' '])[0]; return; }
                }
            });
            bool started = await Task.WhenAny(readUrl, Task.Delay(TimeSpan.FromSeconds(90))) == readUrl;
            Assert.True(started && url is not null, "server did not start: " + stderr);
            using var client = new HttpClient { BaseAddress = new Uri(url!), Timeout = TimeSpan.FromSeconds(90) };
            var body = JsonSerializer.Serialize(new { model = "alpha", prompt = "Hello world", max_tokens = 60, temperature = 0, ignore_eos = true, stream = true });
            using var response = await client.SendAsync(new HttpRequestMessage(HttpMethod.Post, "/v1/completions") { Content = new StringContent(body, Encoding.UTF8, "application/json") },
                HttpCompletionOption.ResponseHeadersRead);
            using var reader = new StreamReader(await response.Content.ReadAsStreamAsync());
            var events = new List<string>();
            // Send SIGTERM once the first chunk has arrived, i.e. while the request runs.
            for (int i = 0; i < 1000 && await reader.ReadLineAsync() is string line; i++)
            {
                if (line.StartsWith("data: ")) events.Add(line[6..]);
                if (events.Count == 1) Process.Start("kill", ["-TERM", server.Id.ToString()])!.WaitForExit();
            }
            Assert.Equal("[DONE]", events[^1]);
            var finish = JsonDocument.Parse(events[^2]).RootElement.GetProperty("choices")[0].GetProperty("finish_reason").GetString();
            Assert.Equal("length", finish); // all 60 tokens, not cut off by the shutdown
            Assert.True(server.WaitForExit(TimeSpan.FromSeconds(60)), "the server did not exit after SIGTERM");
            Assert.Equal(0, server.ExitCode);
        }
        finally
        {
            if (!server.HasExited) server.Kill(entireProcessTree: true);
        }
    }
}
