using System.Collections.Concurrent;
using System.Security.Cryptography;
using System.Text;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;
using PeftSharp.Federated;
using PeftSharp.Peft;

namespace PeftSharp.Cli.Federated;

/// <summary>
/// ASP.NET Core minimal API in front of a <see cref="FederatedServer"/> (see <see cref="FederatedProtocol"/>). A bad
/// request is answered with a one-line JSON error and never stops the server; request bodies are bounded.
/// </summary>
public sealed class FederatedEndpoints(FederatedServer server, string? token, long maxUploadBytes)
{
    readonly byte[]? expected = token is null ? null : Encoding.UTF8.GetBytes("Bearer " + token);

    /// <summary>Clients told "done" (the server lingers until the last round's reporters heard it).</summary>
    public ConcurrentDictionary<string, bool> ToldDone { get; } = new(StringComparer.Ordinal);

    public static (WebApplication App, FederatedEndpoints Endpoints) Build(FederatedServer server, string host, int port, string? token, long maxUploadBytes)
    {
        var builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions { Args = [] });
        builder.Logging.ClearProviders();
        string h = host.Contains(':') ? $"[{host}]" : host;
        builder.WebHost.UseUrls($"http://{h}:{port}");
        builder.WebHost.ConfigureKestrel(k =>
        {
            k.Limits.MaxRequestBodySize = maxUploadBytes;
            k.Limits.MaxConcurrentConnections = 256;
            k.Limits.MaxRequestHeadersTotalSize = 16 * 1024;
            k.AddServerHeader = false;
        });
        var app = builder.Build();
        var endpoints = new FederatedEndpoints(server, token, maxUploadBytes);
        app.Use(endpoints.Guard);
        string root = FederatedProtocol.Root;
        app.MapGet(root + "/status", endpoints.Status);
        app.MapPost(root + "/checkin", endpoints.CheckIn);
        app.MapGet(root + "/rounds/{round:int}/{file}", endpoints.Download);
        app.MapPost(root + "/rounds/{round:int}/update", endpoints.Update);
        return (app, endpoints);
    }

    static IResult Error(int status, string message) => Results.Json(new { error = message }, statusCode: status);

    /// <summary>Authentication, and the last line of defence: any failure becomes a JSON error, never a crash.</summary>
    async Task Guard(HttpContext context, RequestDelegate next)
    {
        try
        {
            if (expected is not null)
            {
                var given = Encoding.UTF8.GetBytes(context.Request.Headers.Authorization.ToString());
                if (!CryptographicOperations.FixedTimeEquals(given, expected))
                {
                    await Error(401, "missing or wrong token (send 'Authorization: Bearer TOKEN')").ExecuteAsync(context);
                    return;
                }
            }
            await next(context);
        }
        catch (BadHttpRequestException e) when (!context.Response.HasStarted)
        {
            await Error(e.StatusCode, e.StatusCode == 413 ? $"request body larger than {maxUploadBytes} bytes" : e.Message.Split('\n')[0]).ExecuteAsync(context);
        }
        catch (Exception e) when (!context.Response.HasStarted && e is not OperationCanceledException)
        {
            Console.Error.WriteLine($"federated server: {context.Request.Path}: {e.GetType().Name}: {e.Message.Split('\n')[0]}");
            await Error(500, "internal server error").ExecuteAsync(context);
        }
    }

    IResult Status()
    {
        var open = server.Current;
        return Results.Json(new
        {
            rounds = server.Options.Rounds, completed_rounds = server.CompletedRounds, finished = server.Finished,
            open_round = open?.Round, selected = open?.Selected ?? [], reported = open?.Reported ?? [], seconds_left = open?.SecondsLeft,
            aggregation = server.Options.Aggregation.ToString().ToLowerInvariant(),
        });
    }

    IResult CheckIn(HttpRequest request)
    {
        string? client = request.Query["client"];
        if (client is null || !FederatedProtocol.ClientName().IsMatch(client))
            return Error(400, $"client: expected 1-64 letters, digits, '.', '_' or '-', got \"{client}\"");
        var reply = server.CheckIn(client);
        if (reply.Status == CheckInStatus.Done) ToldDone[client] = true;
        return Results.Json(new CheckInJson(reply.Status.ToString().ToLowerInvariant(), reply.Round, reply.LocalSteps, reply.LearningRate, reply.BatchSize,
            reply.Seed, reply.FreezeLoraA, reply.SecondsLeft, 1.0));
    }

    IResult Download(int round, string file)
    {
        if (file is not ("adapter_config.json" or AdapterFiles.WeightsFileName))
            return Error(404, $"no file \"{file}\" (expected adapter_config.json or {AdapterFiles.WeightsFileName})");
        if (server.StartAdapterDir(round) is not string dir) return Error(404, $"round {round} is not open");
        string path = Path.Combine(dir, file);
        return Results.File(path, file.EndsWith(".json") ? "application/json" : "application/octet-stream");
    }

    async Task<IResult> Update(HttpRequest request, int round)
    {
        string? client = request.Query["client"];
        if (client is null || !FederatedProtocol.ClientName().IsMatch(client))
            return Error(400, $"client: expected 1-64 letters, digits, '.', '_' or '-', got \"{client}\"");
        if (!long.TryParse(request.Query["samples"], out long samples) || samples < 1)
            return Error(400, $"samples: expected a positive integer (the client's training examples), got \"{request.Query["samples"]}\"");
        if (request.ContentLength is long length && length > maxUploadBytes)
            return Error(413, $"request body of {length} bytes is larger than {maxUploadBytes} bytes");
        string path = server.NewUploadPath();
        try
        {
            await using (var file = File.Create(path)) await request.Body.CopyToAsync(file, request.HttpContext.RequestAborted);
        }
        catch
        {
            File.Delete(path);   // too large, or the client went away mid-upload
            throw;
        }
        try
        {
            var outcome = server.Upload(round, client, samples, path);
            return outcome switch
            {
                ReportOutcome.Accepted => Results.Json(new { accepted = true, round, client, samples }),
                ReportOutcome.WrongRound => Error(409, $"round {round} is not open (the open round is {server.Current?.Round.ToString() ?? "none"}); check in again"),
                ReportOutcome.NotSelected => Error(409, $"client {client} was not selected for round {round}; check in first"),
                ReportOutcome.AlreadyReported => Error(409, $"client {client} already reported for round {round}"),
                _ => Error(409, $"round {round} closed at its deadline before this upload arrived"),
            };
        }
        catch (PeftSharpException e)
        {
            return Error(400, e.Message);   // Upload deleted the file
        }
    }
}
