using System.CommandLine;
using PeftSharp.Data;

namespace PeftSharp.Cli.Commands.Data;

/// <summary><c>peftsharp data split FILE --output-dir DIR</c>: train.jsonl and validation.jsonl by a hash of each record (deterministic).</summary>
public static class DataSplitCommand
{
    public static Command Create()
    {
        var file = DataCommand.FileArgument();
        var outDir = new Option<string>("--output-dir") { Description = "folder for train.jsonl and validation.jsonl", Required = true };
        var fraction = new Option<double>("--validation-fraction") { Description = "share of records for validation", DefaultValueFactory = _ => 0.1 };
        var seed = new Option<int>("--seed") { Description = "mixed into the hash: another seed, another split", DefaultValueFactory = _ => 0 };
        var json = CliOptions.Json();
        var command = new Command("split", "deterministic train/validation split by record hash") { file, outDir, fraction, seed, json };
        command.SetAction(parse => CliErrors.Run(() =>
        {
            string path = parse.GetValue(file)!, dir = parse.GetValue(outDir)!;
            string trainPath = Path.Combine(dir, "train.jsonl"), validationPath = Path.Combine(dir, "validation.jsonl");
            DataCleaner.CheckNotInput(path, trainPath, "--output-dir");
            DataCleaner.CheckNotInput(path, validationPath, "--output-dir");
            var (train, validation) = DataSplitter.Split(DataCleaner.Read(path), parse.GetValue(fraction), parse.GetValue(seed), path);
            DataCleaner.WriteLines(trainPath, train.Select(r => r.Raw));
            DataCleaner.WriteLines(validationPath, validation.Select(r => r.Raw));
            Console.WriteLine($"{path}: {train.Count} records to {trainPath}, {validation.Count} to {validationPath}");
            if (parse.GetValue(json))
                JsonOutput.Write(new { input = path, train = train.Count, validation = validation.Count, train_file = trainPath, validation_file = validationPath });
            return 0;
        }));
        return command;
    }
}
