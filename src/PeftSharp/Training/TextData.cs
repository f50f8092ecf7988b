using PeftSharp.Tokenization;

namespace PeftSharp.Training;

/// <summary>
/// Plain text for continued pre-training, as transformers' run_clm.py prepares it: each document is tokenized
/// (with the tokenizer's own BOS where it adds one), documents are concatenated with EOS between them, and the
/// stream is cut into blocks of <c>blockSize</c> tokens whose labels are their inputs (every token is trained on).
/// </summary>
/// <remarks>
/// Unlike run_clm, a final block shorter than <c>blockSize</c> is kept (if it has at least two tokens, so that it
/// predicts something) rather than dropped, so that a small file still trains on all of its text.
/// </remarks>
public static class TextData
{
    /// <summary>Packs one UTF-8 text file, the whole file being one document.</summary>
    /// <exception cref="PeftSharpException">The file is missing or holds too little text for one block.</exception>
    public static TrainingData LoadFile(string path, ModelTokenizer tokenizer, int blockSize)
    {
        if (!File.Exists(path)) throw new PeftSharpException($"{path}: file not found");
        var data = Pack(tokenizer, [File.ReadAllText(path)], blockSize);
        if (data.Examples.Count == 0) throw new PeftSharpException($"{path}: needs at least 2 tokens of text to train on");
        return data;
    }

    /// <summary>Tokenizes, concatenates (EOS between documents) and cuts into blocks.</summary>
    public static TrainingData Pack(ModelTokenizer tokenizer, IEnumerable<string> documents, int blockSize)
    {
        if (blockSize < 2) throw new PeftSharpException($"block size must be at least 2 tokens, got {blockSize}");
        var warnings = new List<string>();
        var stream = new List<int>();
        bool first = true;
        foreach (var document in documents)
        {
            if (!first)
            {
                // A tokenizer that adds EOS itself (add_eos_token) has already separated the documents.
                if (tokenizer.EosTokenId is int eos) { if (stream.Count == 0 || stream[^1] != eos) stream.Add(eos); }
                else if (warnings.Count == 0) warnings.Add("the tokenizer has no EOS token: documents are concatenated without a separator");
            }
            stream.AddRange(tokenizer.Encode(document, addSpecialTokens: true));
            first = false;
        }
        var examples = new List<TrainingExample>();
        for (int start = 0; start < stream.Count; start += blockSize)
        {
            int length = Math.Min(blockSize, stream.Count - start);
            if (length < 2) break;
            var block = stream.GetRange(start, length).ToArray();
            examples.Add(new TrainingExample(block, (int[])block.Clone()));
        }
        return new TrainingData(examples, warnings);
    }
}
