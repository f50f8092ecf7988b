namespace PeftSharp.Evaluation;

/// <summary>
/// The prompt LLM-Adapters' evaluate.py and commonsense_evaluate.py build (<c>generate_prompt</c>). It is Stanford
/// Alpaca's template written as an indented Python triple-quoted f-string, so every line after the first starts with
/// the 16 spaces of the source indentation, blank lines stay empty, the prompt ends in 16 spaces after
/// "### Response:\n", and the no-input header ends in "request. " with a trailing space. Those scripts never pass
/// the record's <c>input</c>, so the no-input form is the one their tables used.
/// </summary>
public static class AlpacaPrompt
{
    const string Indent = "                "; // 16 spaces

    /// <summary>The no-input form (what the evaluation scripts use for every record).</summary>
    public static string Build(string instruction) =>
        "Below is an instruction that describes a task. Write a response that appropriately completes the request. \n" +
        "\n" +
        Indent + "### Instruction:\n" +
        Indent + instruction + "\n" +
        "\n" +
        Indent + "### Response:\n" +
        Indent;

    /// <summary>The with-input form of the same function (used here for reading comprehension, which has a passage).</summary>
    public static string Build(string instruction, string input) =>
        string.IsNullOrEmpty(input) ? Build(instruction) :
        "Below is an instruction that describes a task, paired with an input that provides further context. Write a response that appropriately completes the request.\n" +
        "\n" +
        Indent + "### Instruction:\n" +
        Indent + instruction + "\n" +
        "\n" +
        Indent + "### Input:\n" +
        Indent + input + "\n" +
        "\n" +
        Indent + "### Response:\n" +
        Indent;
}
