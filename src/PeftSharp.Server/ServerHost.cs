using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using PeftSharp.Server.Adapters;
using PeftSharp.Server.Engine;
using PeftSharp.Server.Http;
using PeftSharp.Server.Metrics;

namespace PeftSharp.Server;

/// <summary>
/// Builds the server: Kestrel with the limits from <see cref="ServerOptions"/>, the endpoints, and the batching
/// engine as a hosted service. Stopping the host (SIGTERM, Ctrl+C) stops taking requests and lets the running
/// ones finish, for at most <see cref="ServerOptions.DrainTimeout"/>.
/// </summary>
public static class ServerHost
{
    /// <summary>
    /// Builds (does not start) the application. Adapters named in <paramref name="options"/> are loaded now, so a bad
    /// folder fails here with a <see cref="PeftSharpException"/>.
    /// </summary>
    public static WebApplication Build(ServedModel served, ServerOptions options, bool logToConsole = false)
    {
        options.Validate();
        var builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions { Args = [] });
        builder.Logging.ClearProviders();
        if (logToConsole)
        {
            builder.Logging.AddSimpleConsole(o => { o.SingleLine = true; o.TimestampFormat = "HH:mm:ss "; });
            builder.Logging.AddFilter("Microsoft.AspNetCore", LogLevel.Warning);
            builder.Services.Configure<Microsoft.Extensions.Logging.Console.ConsoleLoggerOptions>(o => o.LogToStandardErrorThreshold = LogLevel.Trace);
        }
        string host = options.Host.Contains(':') ? $"[{options.Host}]" : options.Host;
        builder.WebHost.UseUrls($"http://{host}:{options.Port}");
        builder.WebHost.ConfigureKestrel(k =>
        {
            k.Limits.MaxRequestBodySize = options.MaxBodyBytes;
            k.Limits.MaxConcurrentConnections = options.MaxConnections;
            k.Limits.MaxConcurrentUpgradedConnections = options.MaxConnections;
            k.AddServerHeader = false;
        });
        builder.Services.Configure<HostOptions>(o => o.ShutdownTimeout = options.DrainTimeout);

        var metrics = new ServerMetrics();
        var adapters = new AdapterManager(served.Adapters, options.MaxLoadedAdapters, options.AdapterDir is null ? null : new AdapterPaths(options.AdapterDir));
        foreach (var (name, dir) in options.Adapters)
        {
            if (name == served.Name) throw new PeftSharpException($"--adapter {name}: the name is the base model's");
            if (!adapters.Register(name, Path.GetFullPath(dir))) throw new PeftSharpException($"--adapter {name}: the name is given twice");
            if (adapters.LoadedCount < options.MaxLoadedAdapters)
            {
                var (result, _, error) = adapters.Ensure(name, new HashSet<string>());
                if (result != EnsureResult.Ready) throw new PeftSharpException($"--adapter {name}={dir}: {error ?? result.ToString()}");
            }
        }
        builder.Services.AddSingleton(served);
        builder.Services.AddSingleton(options);
        builder.Services.AddSingleton(metrics);
        builder.Services.AddSingleton(adapters);
        builder.Services.AddSingleton<BatchEngine>();
        builder.Services.AddHostedService(sp => sp.GetRequiredService<BatchEngine>());

        var app = builder.Build();
        var engine = app.Services.GetRequiredService<BatchEngine>();
        var logger = app.Services.GetRequiredService<ILoggerFactory>().CreateLogger("PeftSharp.Server");
        app.Lifetime.ApplicationStopping.Register(engine.BeginDrain);
        var generation = new GenerationEndpoints(served, adapters, engine, options, metrics);
        var admin = new AdminEndpoints(served, adapters, engine, options, metrics);

        // A server never dies on a bad request, and never answers with a stack trace.
        app.Use(async (context, next) =>
        {
            try
            {
                await next(context);
            }
            catch (Exception e) when (e is not OperationCanceledException || !context.RequestAborted.IsCancellationRequested)
            {
                logger.LogError(e, "request {Path} failed", context.Request.Path);
                if (!context.Response.HasStarted) await new OpenAiError(500, "internal server error").WriteAsync(context);
            }
        });
        app.Use(admin.RequireKey);
        app.MapGet("/v1/models", admin.Models);
        app.MapPost("/v1/completions", generation.Completions);
        app.MapPost("/v1/chat/completions", generation.ChatCompletions);
        app.MapPost("/v1/load_lora_adapter", admin.LoadAdapter);
        app.MapPost("/v1/unload_lora_adapter", admin.UnloadAdapter);
        app.MapGet("/health", admin.Health);
        app.MapGet("/metrics", admin.Metrics);
        return app;
    }
}
