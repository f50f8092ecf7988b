using System.Runtime.InteropServices;
using System.Text;
using PeftSharp.Build;

namespace PeftSharp.Tests.Build;

/// <summary>Tests of build/ElfVersionNeedPatcher.cs, which the build runs on TorchSharp's native library.</summary>
public class ElfVersionNeedPatcherTests
{
    const string Glibcxx32 = "GLIBCXX_3.4.32";

    /// <summary>
    /// A minimal ELF64 little-endian file with only what the patcher reads: the ELF header, a .dynstr string
    /// table, a .gnu.version_r section with two Verneed records (libstdc++.so.6 with three Vernaux entries,
    /// libc.so.6 with two), a .gnu.version_d section with two Verdef records, and a .shstrtab.
    /// </summary>
    sealed class SyntheticElf
    {
        public byte[] Bytes = [];
        public long Glibcxx32FlagsOffset;     // vna_flags of the GLIBCXX_3.4.32 Vernaux
        public long FirstVerneedOffset;       // the libstdc++.so.6 Verneed record
        public long FirstVernauxOffset;       // its first Vernaux record
        public long DynstrHeaderOffset;       // the section header of .dynstr
        public long VerneedHeaderOffset;      // the section header of .gnu.version_r

        public static SyntheticElf Build()
        {
            var elf = new SyntheticElf();
            var dynstr = new StringTable();
            uint libstdcxx = dynstr.Add("libstdc++.so.6"), libc = dynstr.Add("libc.so.6"), soname = dynstr.Add("libsynthetic.so");
            var shstr = new StringTable();

            var ms = new MemoryStream();
            var w = new BinaryWriter(ms);  // BinaryWriter writes little-endian
            w.Write(new byte[64]);         // ELF header, filled in at the end

            long dynstrOffset = ms.Position;
            var dynstrIndexes = new Dictionary<string, uint>();
            foreach (var name in new[] { "GLIBCXX_3.4.30", Glibcxx32, "CXXABI_1.3", "GLIBC_2.34", "GLIBC_2.2.5", "SYNTH_1.0" })
                dynstrIndexes[name] = dynstr.Add(name);
            w.Write(dynstr.Bytes);
            Align(w, 8);

            // .gnu.version_r: Verneed {u16 vn_version, u16 vn_cnt, u32 vn_file, u32 vn_aux, u32 vn_next},
            // each followed by its Vernaux {u32 vna_hash, u16 vna_flags, u16 vna_other, u32 vna_name, u32 vna_next}.
            long verneedOffset = ms.Position;
            (uint File, string[] Versions)[] needs =
            [
                (libstdcxx, ["GLIBCXX_3.4.30", Glibcxx32, "CXXABI_1.3"]),
                (libc, ["GLIBC_2.34", "GLIBC_2.2.5"]),
            ];
            ushort versionIndex = 2;
            for (int n = 0; n < needs.Length; n++)
            {
                bool lastNeed = n == needs.Length - 1;
                int count = needs[n].Versions.Length;
                if (n == 0) elf.FirstVerneedOffset = ms.Position;
                w.Write((ushort)1); w.Write((ushort)count); w.Write(needs[n].File); w.Write(16u);
                w.Write(lastNeed ? 0u : (uint)(16 + 16 * count));
                for (int a = 0; a < count; a++)
                {
                    string version = needs[n].Versions[a];
                    if (n == 0 && a == 0) elf.FirstVernauxOffset = ms.Position;
                    if (version == Glibcxx32) elf.Glibcxx32FlagsOffset = ms.Position + 4;
                    // vna_flags 0, except one entry that is already weak (must stay as it is).
                    ushort flags = version == "GLIBC_2.2.5" ? ElfVersionNeedPatcher.VerFlagWeak : (ushort)0;
                    w.Write(ElfHash(version)); w.Write(flags); w.Write(versionIndex++); w.Write(dynstrIndexes[version]);
                    w.Write(a == count - 1 ? 0u : 16u);
                }
            }
            long verneedSize = ms.Position - verneedOffset;

            // .gnu.version_d: Verdef {u16 vd_version, u16 vd_flags, u16 vd_ndx, u16 vd_cnt, u32 vd_hash, u32 vd_aux, u32 vd_next}
            // followed by Verdaux {u32 vda_name, u32 vda_next}. The first record is the file's own name (VER_FLG_BASE).
            long verdefOffset = ms.Position;
            w.Write((ushort)1); w.Write((ushort)1); w.Write((ushort)1); w.Write((ushort)1);
            w.Write(ElfHash("libsynthetic.so")); w.Write(20u); w.Write(28u);
            w.Write(soname); w.Write(0u);
            w.Write((ushort)1); w.Write((ushort)0); w.Write((ushort)2); w.Write((ushort)1);
            w.Write(ElfHash("SYNTH_1.0")); w.Write(20u); w.Write(0u);
            w.Write(dynstrIndexes["SYNTH_1.0"]); w.Write(0u);
            long verdefSize = ms.Position - verdefOffset;

            uint nDynstr = shstr.Add(".dynstr"), nVerneed = shstr.Add(".gnu.version_r"), nVerdef = shstr.Add(".gnu.version_d"),
                nShstr = shstr.Add(".shstrtab");
            long shstrOffset = ms.Position;
            w.Write(shstr.Bytes);
            Align(w, 8);

            // Section headers: Elf64_Shdr {u32 name, u32 type, u64 flags, u64 addr, u64 offset, u64 size, u32 link, u32 info, u64 addralign, u64 entsize}.
            long shoff = ms.Position;
            WriteShdr(w, 0, 0, 0, 0, 0, 0);                                                        // [0] SHN_UNDEF
            elf.DynstrHeaderOffset = ms.Position;
            WriteShdr(w, nDynstr, 3, dynstrOffset, dynstr.Bytes.Length, 0, 0);                     // [1] .dynstr (SHT_STRTAB)
            elf.VerneedHeaderOffset = ms.Position;
            WriteShdr(w, nVerneed, 0x6ffffffe, verneedOffset, verneedSize, 1, (uint)needs.Length); // [2] .gnu.version_r
            WriteShdr(w, nVerdef, 0x6ffffffd, verdefOffset, verdefSize, 1, 2);                     // [3] .gnu.version_d
            WriteShdr(w, nShstr, 3, shstrOffset, shstr.Bytes.Length, 0, 0);                        // [4] .shstrtab

            // ELF header: e_ident, e_type ET_DYN, e_machine EM_X86_64, e_version, entry/phoff 0, e_shoff, flags,
            // e_ehsize, e_phentsize, e_phnum, e_shentsize, e_shnum, e_shstrndx.
            ms.Position = 0;
            w.Write([0x7f, (byte)'E', (byte)'L', (byte)'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
            w.Write((ushort)3); w.Write((ushort)62); w.Write(1u); w.Write(0UL); w.Write(0UL); w.Write((ulong)shoff); w.Write(0u);
            w.Write((ushort)64); w.Write((ushort)56); w.Write((ushort)0); w.Write((ushort)64); w.Write((ushort)5); w.Write((ushort)4);
            w.Flush();
            elf.Bytes = ms.ToArray();
            return elf;
        }

        static void WriteShdr(BinaryWriter w, uint name, uint type, long offset, long size, uint link, uint info)
        {
            w.Write(name); w.Write(type); w.Write(0UL); w.Write(0UL); w.Write((ulong)offset); w.Write((ulong)size);
            w.Write(link); w.Write(info); w.Write(8UL); w.Write(0UL);
        }

        static void Align(BinaryWriter w, int alignment)
        {
            while (w.BaseStream.Position % alignment != 0) w.Write((byte)0);
        }

        static uint ElfHash(string name)  // the System V ELF hash stored in vna_hash / vd_hash
        {
            uint h = 0;
            foreach (byte c in Encoding.ASCII.GetBytes(name))
            {
                h = (h << 4) + c;
                uint g = h & 0xf0000000;
                if (g != 0) h ^= g >> 24;
                h &= ~g;
            }
            return h;
        }
    }

    sealed class StringTable
    {
        readonly MemoryStream _bytes = new();
        public StringTable() => _bytes.WriteByte(0);  // index 0 is the empty string
        public byte[] Bytes => _bytes.ToArray();
        public uint Add(string s)
        {
            uint index = (uint)_bytes.Position;
            _bytes.Write(Encoding.ASCII.GetBytes(s + "\0"));
            return index;
        }
    }

    static void WriteU32(byte[] d, long at, uint value) => BitConverter.GetBytes(value).CopyTo(d, at);
    static void WriteU64(byte[] d, long at, ulong value) => BitConverter.GetBytes(value).CopyTo(d, at);

    [Fact]
    public void ReadsAllVersionNeedsWithTheirFiles()
    {
        var entries = ElfVersionNeedPatcher.ReadVersionNeeds(SyntheticElf.Build().Bytes);

        Assert.Equal(
            ["libstdc++.so.6:GLIBCXX_3.4.30", "libstdc++.so.6:GLIBCXX_3.4.32", "libstdc++.so.6:CXXABI_1.3", "libc.so.6:GLIBC_2.34", "libc.so.6:GLIBC_2.2.5"],
            entries.Select(e => e.File + ":" + e.Name));
        Assert.Equal(["GLIBC_2.2.5"], entries.Where(e => e.IsWeak).Select(e => e.Name));
    }

    [Fact]
    public void ReadsVersionDefinitions()
    {
        Assert.Equal(["libsynthetic.so", "SYNTH_1.0"], ElfVersionNeedPatcher.ReadVersionDefinitions(SyntheticElf.Build().Bytes));
    }

    [Fact]
    public void MarksOnlyTheNamedEntryWeakAndIsIdempotent()
    {
        var elf = SyntheticElf.Build();
        using var dir = new TempDir();
        var path = Path.Combine(dir.Path, "libsynthetic.so");
        File.WriteAllBytes(path, elf.Bytes);
        var stamp = new DateTime(2024, 1, 2, 3, 4, 5, DateTimeKind.Utc);
        File.SetLastWriteTimeUtc(path, stamp);

        Assert.Equal(1, ElfVersionNeedPatcher.MarkVersionNeedWeak(path, Glibcxx32));

        var expected = (byte[])elf.Bytes.Clone();
        expected[elf.Glibcxx32FlagsOffset] |= 0x2;
        Assert.Equal(expected, File.ReadAllBytes(path));                      // exactly one byte changed
        Assert.Equal(stamp, File.GetLastWriteTimeUtc(path));                  // so MSBuild's incremental copy skips it
        Assert.Equal([Path.GetFileName(path)], Directory.GetFiles(dir.Path).Select(Path.GetFileName));  // no temp file left

        Assert.Equal(0, ElfVersionNeedPatcher.MarkVersionNeedWeak(path, Glibcxx32));  // second run: nothing to do
        Assert.Equal(expected, File.ReadAllBytes(path));
        Assert.Equal(0, ElfVersionNeedPatcher.MarkVersionNeedWeak(path, "GLIBC_2.2.5"));  // already weak
        Assert.Equal(0, ElfVersionNeedPatcher.MarkVersionNeedWeak(path, "GLIBCXX_9.9.9")); // not needed at all
        Assert.Equal(expected, File.ReadAllBytes(path));
    }

    [DllImport("libc", SetLastError = true)]
    static extern int link(string oldpath, string newpath);

    [Fact]
    public void ReplacesAHardLinkInsteadOfEditingTheSharedFile()
    {
        if (!OperatingSystem.IsLinux()) return;
        var elf = SyntheticElf.Build();
        using var dir = new TempDir();
        var cache = Path.Combine(dir.Path, "cache.so");     // stands in for the NuGet package cache
        var output = Path.Combine(dir.Path, "output.so");   // a build output hard-linked to it
        File.WriteAllBytes(cache, elf.Bytes);
        File.SetUnixFileMode(cache, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute | UnixFileMode.GroupRead);
        Assert.Equal(0, link(cache, output));

        Assert.Equal(1, ElfVersionNeedPatcher.MarkVersionNeedWeak(output, Glibcxx32));

        Assert.Equal(elf.Bytes, File.ReadAllBytes(cache));
        Assert.NotEqual(elf.Bytes, File.ReadAllBytes(output));
        Assert.Equal(File.GetUnixFileMode(cache), File.GetUnixFileMode(output));  // still executable
    }

    // Name -> (corruption, part of the expected message). Named so that each case shows up as its own test.
    static readonly Dictionary<string, (Action<SyntheticElf, byte[]> Corrupt, string Message)> Corruptions = new()
    {
        ["not ELF"] = ((e, d) => d[1] = (byte)'X', "not an ELF file"),
        ["32-bit"] = ((e, d) => d[4] = 1, "not a 64-bit"),
        ["big-endian"] = ((e, d) => d[5] = 2, "not a little-endian"),
        ["section headers past end"] = ((e, d) => WriteU64(d, 0x28, (ulong)d.Length - 100), "section header table"),
        ["section offset past end"] = ((e, d) => WriteU64(d, e.VerneedHeaderOffset + 24, (ulong)d.Length + 16), "section 2 ("),
        ["section size past end"] = ((e, d) => WriteU64(d, e.VerneedHeaderOffset + 32, (ulong)d.Length), "section 2 ("),
        ["huge section offset"] = ((e, d) => WriteU64(d, e.VerneedHeaderOffset + 24, ulong.MaxValue - 8), "section 2 ("),
        ["sh_link not a string table"] = ((e, d) => WriteU32(d, e.VerneedHeaderOffset + 40, 2), "sh_link 2"),
        ["sh_link out of range"] = ((e, d) => WriteU32(d, e.VerneedHeaderOffset + 40, 99), "sh_link 99"),
        ["vn_next loop (0 before the last record)"] = ((e, d) => WriteU32(d, e.FirstVerneedOffset + 12, 0), "Verneed chain ends after 1 of 2"),
        ["vn_next out of range"] = ((e, d) => WriteU32(d, e.FirstVerneedOffset + 12, 0x10000), "Verneed next 0x10000"),
        ["vn_next max"] = ((e, d) => WriteU32(d, e.FirstVerneedOffset + 12, uint.MaxValue), "Verneed next 0xffffffff"),
        ["vn_aux out of range"] = ((e, d) => WriteU32(d, e.FirstVerneedOffset + 8, 0x7fffffff), "vn_aux"),
        ["more records than the section holds"] = ((e, d) => WriteU32(d, e.VerneedHeaderOffset + 44, 3), "Verneed chain ends after 2 of 3"),
        ["vna_next loop"] = ((e, d) => WriteU32(d, e.FirstVernauxOffset + 12, 0), "Vernaux chain ends after 1 of 3"),
        ["vna_next out of range"] = ((e, d) => WriteU32(d, e.FirstVernauxOffset + 12, 0x10000), "Vernaux next 0x10000"),
        ["vna_name outside the string table"] = ((e, d) => WriteU32(d, e.FirstVernauxOffset + 8, 0x10000), "string index 0x10000"),
        ["vn_file outside the string table"] = ((e, d) => WriteU32(d, e.FirstVerneedOffset + 4, uint.MaxValue), "string index 0xffffffff"),
    };

    public static TheoryData<string> CorruptionNames() => new(Corruptions.Keys);

    [Theory]
    [MemberData(nameof(CorruptionNames))]
    public void RejectsMalformedFiles(string corruption)
    {
        var elf = SyntheticElf.Build();
        var bytes = (byte[])elf.Bytes.Clone();
        Corruptions[corruption].Corrupt(elf, bytes);
        var e = Assert.Throws<InvalidDataException>(() => ElfVersionNeedPatcher.ReadVersionNeeds(bytes));
        Assert.StartsWith("Malformed ELF file: ", e.Message);
        Assert.Contains(Corruptions[corruption].Message, e.Message);
    }

    [Fact]
    public void RejectsTruncatedFilesAtEveryLength()
    {
        var bytes = SyntheticElf.Build().Bytes;
        // Cutting anywhere loses at least part of the section header table, which sits at the end.
        for (int length = 0; length < bytes.Length; length++)
            Assert.Throws<InvalidDataException>(() => ElfVersionNeedPatcher.ReadVersionNeeds(bytes.AsSpan(0, length).ToArray()));
    }

    [Fact]
    public void RejectsAnUnterminatedString()
    {
        var elf = SyntheticElf.Build();
        var bytes = (byte[])elf.Bytes.Clone();
        // Shrink .dynstr (section 1) so that its last string, SYNTH_1.0, loses its NUL terminator.
        long dynstrSizeField = elf.DynstrHeaderOffset + 32;
        WriteU64(bytes, dynstrSizeField, BitConverter.ToUInt64(bytes, (int)dynstrSizeField) - 1);
        Assert.Throws<InvalidDataException>(() => ElfVersionNeedPatcher.ReadVersionDefinitions(bytes));
    }

    [Fact]
    public void MalformedFileIsLeftUntouched()
    {
        var elf = SyntheticElf.Build();
        var bytes = (byte[])elf.Bytes.Clone();
        WriteU32(bytes, elf.FirstVerneedOffset + 12, 0x10000);
        using var dir = new TempDir();
        var path = Path.Combine(dir.Path, "bad.so");
        File.WriteAllBytes(path, bytes);
        Assert.Throws<InvalidDataException>(() => ElfVersionNeedPatcher.MarkVersionNeedWeak(path, Glibcxx32));
        Assert.Equal(bytes, File.ReadAllBytes(path));
    }

    [Fact]
    public void SystemLibStdCxxDefinesItsBaseVersionOnly()
    {
        var libstdcxx = ElfVersionNeedPatcher.FindSystemLibStdCxx();
        if (libstdcxx == null) return;  // not Linux, or no libstdc++ in the usual places
        Assert.True(ElfVersionNeedPatcher.DefinesVersion(libstdcxx, "GLIBCXX_3.4"));
        Assert.False(ElfVersionNeedPatcher.DefinesVersion(libstdcxx, "GLIBCXX_99.0"));
    }

    /// <summary>The build (build/FixLibTorchSharp.targets) patches the copy in this test's own output folder.</summary>
    [Fact]
    public void LibTorchSharpInTheOutputFolderIsPatchedWhereNeeded()
    {
        var path = Path.Combine(AppContext.BaseDirectory, "runtimes", "linux-x64", "native", "libLibTorchSharp.so");
        if (!File.Exists(path)) return;  // e.g. a CUDA or non-Linux build

        var entry = Assert.Single(ElfVersionNeedPatcher.ReadVersionNeeds(File.ReadAllBytes(path)), e => e.Name == Glibcxx32);
        Assert.Equal("libstdc++.so.6", entry.File);

        var libstdcxx = ElfVersionNeedPatcher.FindSystemLibStdCxx();
        if (OperatingSystem.IsLinux() && libstdcxx != null && !ElfVersionNeedPatcher.DefinesVersion(libstdcxx, Glibcxx32))
            Assert.True(entry.IsWeak, $"{path} still needs {Glibcxx32}, which {libstdcxx} lacks: the build did not patch it");
    }
}
