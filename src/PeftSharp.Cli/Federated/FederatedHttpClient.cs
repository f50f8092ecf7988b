using System.Net;
using System.Net.Http.Headers;
using System.Text.Json;
using PeftSharp.Peft;

namespace PeftSharp.Cli.Federated;

/// <summary>
/// The client side of <see cref="FederatedProtocol"/>. A server that cannot be reached (not started yet, restarting)
/// is retried until <paramref name="unreachableFor"/> has passed without an answer; then it is a one-line error.
/// </summary>
public sealed class FederatedHttpClient(Uri server, string? token, TimeSpan unreachableFor) : IDisposable
{
    readonly HttpClient http = CreateHttp(server, token);

    static HttpClient CreateHttp(Uri server, string? token)
    {
        var http = new HttpClient { BaseAddress = new Uri(server, FederatedProtocol.Root + "/"), Timeout = TimeSpan.FromMinutes(10) };
        if (token is not null) http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", token);
        return http;
    }

    public CheckInJson CheckIn(string client)
    {
        using var response = Send(() => new HttpRequestMessage(HttpMethod.Post, $"checkin?client={Uri.EscapeDataString(client)}"));
        return JsonSerializer.Deserialize<CheckInJson>(Ok(response, "check-in"))
               ?? throw new PeftSharpException($"{server}: empty answer to check-in");
    }

    /// <summary>Downloads the global adapter round <paramref name="round"/> starts from into <paramref name="dir"/> (PEFT's two files).</summary>
    public void DownloadAdapter(int round, string dir)
    {
        foreach (var file in new[] { "adapter_config.json", AdapterFiles.WeightsFileName })
        {
            using var response = Send(() => new HttpRequestMessage(HttpMethod.Get, $"rounds/{round}/{file}"));
            if (!response.IsSuccessStatusCode) Ok(response, $"download of {file}");
            using var output = File.Create(Path.Combine(dir, file));
            response.Content.ReadAsStream().CopyTo(output);
        }
    }

    /// <summary>Uploads a trained adapter; returns null when accepted, else the server's one-line reason (409: the round moved on).</summary>
    public string? Upload(int round, string client, long samples, string weightsFile)
    {
        using var response = Send(() => new HttpRequestMessage(HttpMethod.Post, $"rounds/{round}/update?client={Uri.EscapeDataString(client)}&samples={samples}")
        {
            Content = new ByteArrayContent(File.ReadAllBytes(weightsFile)) { Headers = { ContentType = new MediaTypeHeaderValue("application/octet-stream") } },
        });
        if (response.StatusCode == HttpStatusCode.Conflict) return ErrorOf(response);
        Ok(response, "upload");
        return null;
    }

    HttpResponseMessage Send(Func<HttpRequestMessage> request)
    {
        var since = DateTime.UtcNow;
        while (true)
        {
            try
            {
                return http.Send(request());
            }
            catch (HttpRequestException e) when (e.StatusCode is null)
            {
                if (DateTime.UtcNow - since > unreachableFor)
                    throw new PeftSharpException($"--server {server}: unreachable for {unreachableFor.TotalSeconds:G4} s ({e.Message.Split('\n')[0]})");
                Thread.Sleep(500);
            }
        }
    }

    string Ok(HttpResponseMessage response, string what)
    {
        if (response.IsSuccessStatusCode) return response.Content.ReadAsStringAsync().GetAwaiter().GetResult();
        throw new PeftSharpException($"--server {server}: {what} refused ({(int)response.StatusCode}): {ErrorOf(response)}");
    }

    static string ErrorOf(HttpResponseMessage response)
    {
        string body = response.Content.ReadAsStringAsync().GetAwaiter().GetResult();
        try
        {
            using var doc = JsonDocument.Parse(body);
            if (doc.RootElement.TryGetProperty("error", out var e)) return e.GetString() ?? body;
        }
        catch (JsonException) { }
        return body.Length > 200 ? body[..200] : body;
    }

    public void Dispose() => http.Dispose();
}
