// Marks a symbol-version requirement of an ELF shared library as weak.
//
// Why: TorchSharp 0.107.0's libLibTorchSharp.so lists GLIBCXX_3.4.32 as a version it needs from
// libstdc++.so.6 (only for std::ios_base_library_init, which it never calls). On systems whose
// libstdc++ stops at an older version (Debian 12: GLIBCXX_3.4.30) the dynamic loader refuses to load
// the library. Setting VER_FLG_WEAK on that one requirement makes the loader accept a libstdc++ that
// lacks the version, and nothing else changes. See docs/troubleshooting-glibcxx.md.
//
// This one file serves two builds:
//  * build/FixLibTorchSharp.targets compiles it with RoslynCodeTaskFactory, which targets netstandard2.0
//    with references to Microsoft.Build.Framework/Utilities: so the code sticks to netstandard2.0 APIs.
//  * tests/PeftSharp.Tests compiles it with ELF_PATCHER_WITHOUT_TASK defined, leaving out the MSBuild
//    task wrapper at the bottom (the test project has no MSBuild references).
//
// Layout references: the System V gABI (ELF64 header and section headers) and the LSB "Symbol
// Versioning" chapter (Elf64_Verneed/Vernaux in SHT_GNU_verneed, Elf64_Verdef/Verdaux in SHT_GNU_verdef).
// Only ELF64 little-endian files are handled, which covers linux-x64 and linux-arm64.
#nullable enable
using System;
using System.Collections.Generic;
using System.IO;
using System.Text;

namespace PeftSharp.Build
{
    /// <summary>One Elf64_Vernaux record: a version that the file needs from one of its dependencies.</summary>
    public sealed class VersionNeedEntry
    {
        public VersionNeedEntry(string file, string name, ushort flags, long flagsOffset)
        {
            File = file;
            Name = name;
            Flags = flags;
            FlagsOffset = flagsOffset;
        }

        /// <summary>The dependency the version is needed from (vn_file), e.g. "libstdc++.so.6".</summary>
        public string File { get; }
        /// <summary>The version name (vna_name), e.g. "GLIBCXX_3.4.32".</summary>
        public string Name { get; }
        /// <summary>vna_flags; <see cref="ElfVersionNeedPatcher.VerFlagWeak"/> set means the loader tolerates its absence.</summary>
        public ushort Flags { get; }
        /// <summary>Absolute file offset of vna_flags.</summary>
        public long FlagsOffset { get; }
        public bool IsWeak => (Flags & ElfVersionNeedPatcher.VerFlagWeak) != 0;
    }

    public static class ElfVersionNeedPatcher
    {
        public const ushort VerFlagWeak = 0x2;      // VER_FLG_WEAK
        const uint ShtStrtab = 3;                   // SHT_STRTAB
        const uint ShtGnuVerdef = 0x6ffffffd;       // SHT_GNU_verdef  (.gnu.version_d)
        const uint ShtGnuVerneed = 0x6ffffffe;      // SHT_GNU_verneed (.gnu.version_r)
        const int Elf64HeaderSize = 64, Elf64ShdrSize = 64;
        const int VerneedSize = 16, VernauxSize = 16, VerdefSize = 20, VerdauxSize = 8;

        /// <summary>Where distributions put the libstdc++ that the dynamic loader finds by default.</summary>
        public static readonly string[] SystemLibStdCxxPaths =
        {
            "/usr/lib/x86_64-linux-gnu/libstdc++.so.6",
            "/lib/x86_64-linux-gnu/libstdc++.so.6",
            "/usr/lib/aarch64-linux-gnu/libstdc++.so.6",
            "/lib/aarch64-linux-gnu/libstdc++.so.6",
            "/lib64/libstdc++.so.6",
            "/usr/lib64/libstdc++.so.6",
            "/usr/lib/libstdc++.so.6",
            "/lib/libstdc++.so.6",
        };

        /// <summary>The first existing path of <see cref="SystemLibStdCxxPaths"/>, or null if none exists.</summary>
        public static string? FindSystemLibStdCxx()
        {
            foreach (var path in SystemLibStdCxxPaths)
                if (System.IO.File.Exists(path))
                    return path;
            return null;
        }

        /// <summary>Whether the shared library at <paramref name="path"/> defines <paramref name="version"/>
        /// in its .gnu.version_d section (e.g. whether a libstdc++ provides GLIBCXX_3.4.32).</summary>
        public static bool DefinesVersion(string path, string version) =>
            ReadVersionDefinitions(System.IO.File.ReadAllBytes(path)).Contains(version);

        /// <summary>All version names defined by the file (the first Verdaux name of each Verdef record).</summary>
        public static List<string> ReadVersionDefinitions(byte[] elf)
        {
            var names = new List<string>();
            var sections = ReadSections(elf);
            foreach (var sec in sections)
            {
                if (sec.Type != ShtGnuVerdef) continue;
                var strtab = LinkedStringTable(sections, sec);
                // sh_info = number of Verdef records; vd_next / vda_next are byte offsets to the next record.
                ForEachRecord(elf, sec, sec.Offset, sec.Info, VerdefSize, "Verdef", vd =>
                {
                    int auxCount = ReadU16(elf, vd + 6);  // vd_cnt
                    if (auxCount == 0) return ReadU32(elf, vd + 16);  // no name attached
                    long aux = Advance(sec, vd, ReadU32(elf, vd + 12), VerdauxSize, "vd_aux");
                    names.Add(ReadString(elf, strtab, ReadU32(elf, aux)));  // vda_name: the version defined
                    return ReadU32(elf, vd + 16);  // vd_next
                });
            }
            return names;
        }

        /// <summary>All Vernaux records of the file's .gnu.version_r section(s), with their dependency names.</summary>
        public static List<VersionNeedEntry> ReadVersionNeeds(byte[] elf)
        {
            var entries = new List<VersionNeedEntry>();
            var sections = ReadSections(elf);
            foreach (var sec in sections)
            {
                if (sec.Type != ShtGnuVerneed) continue;
                var strtab = LinkedStringTable(sections, sec);
                // sh_info = number of Verneed records. Each: u16 vn_version, u16 vn_cnt, u32 vn_file, u32 vn_aux, u32 vn_next.
                ForEachRecord(elf, sec, sec.Offset, sec.Info, VerneedSize, "Verneed", vn =>
                {
                    if (ReadU16(elf, vn) != 1) throw Malformed($"unsupported vn_version {ReadU16(elf, vn)} at 0x{vn:x}");
                    int auxCount = ReadU16(elf, vn + 2);
                    string file = ReadString(elf, strtab, ReadU32(elf, vn + 4));
                    if (auxCount > 0)
                    {
                        long first = Advance(sec, vn, ReadU32(elf, vn + 8), VernauxSize, "vn_aux");
                        // Each Vernaux: u32 vna_hash, u16 vna_flags, u16 vna_other, u32 vna_name, u32 vna_next.
                        ForEachRecord(elf, sec, first, (uint)auxCount, VernauxSize, "Vernaux", a =>
                        {
                            entries.Add(new VersionNeedEntry(file, ReadString(elf, strtab, ReadU32(elf, a + 8)),
                                ReadU16(elf, a + 4), a + 4));
                            return ReadU32(elf, a + 12);
                        });
                    }
                    return ReadU32(elf, vn + 12);
                });
            }
            return entries;
        }

        /// <summary>
        /// Sets VER_FLG_WEAK on every not-yet-weak Vernaux record named <paramref name="version"/> in the
        /// ELF file at <paramref name="path"/>. Returns how many records changed; 0 leaves the file untouched.
        /// The file is never modified in place: a patched copy is written next to it and renamed over it,
        /// so a hard link into the NuGet package cache is replaced rather than edited. The copy keeps the
        /// original's permissions and last-write time, so MSBuild's incremental copy (which compares size and
        /// time stamp with the package file) skips it on the next build instead of copying the original back.
        /// </summary>
        public static int MarkVersionNeedWeak(string path, string version)
        {
            var original = System.IO.File.ReadAllBytes(path);
            var targets = new List<long>();
            foreach (var e in ReadVersionNeeds(original))
                if (e.Name == version && !e.IsWeak)
                    targets.Add(e.FlagsOffset);
            if (targets.Count == 0) return 0;

            var lastWrite = System.IO.File.GetLastWriteTimeUtc(path);
            var dir = Path.GetDirectoryName(Path.GetFullPath(path))!;
            var temp = Path.Combine(dir, "." + Path.GetFileName(path) + "." + Guid.NewGuid().ToString("N") + ".tmp");
            try
            {
                System.IO.File.Copy(path, temp);  // a new inode with the same mode bits
                using (var stream = new FileStream(temp, FileMode.Open, FileAccess.ReadWrite))
                {
                    if (stream.Length != original.Length) throw new IOException($"{path} changed while being patched");
                    foreach (var offset in targets)
                    {
                        ushort flags = (ushort)(ReadU16(original, offset) | VerFlagWeak);
                        stream.Position = offset;
                        stream.WriteByte((byte)flags);
                        stream.WriteByte((byte)(flags >> 8));
                    }
                }
                System.IO.File.SetLastWriteTimeUtc(temp, lastWrite);
                System.IO.File.Replace(temp, path, null);  // rename(2) on Unix: atomic, never a partial file
            }
            finally
            {
                if (System.IO.File.Exists(temp)) System.IO.File.Delete(temp);
            }
            return targets.Count;
        }

        // ---- ELF parsing. Every read goes through ReadU16/ReadU32/ReadU64/ReadString, which check bounds. ----

        sealed class Section
        {
            public uint Type, Link, Info;
            public long Offset, Size;
            public long End => Offset + Size;
        }

        static List<Section> ReadSections(byte[] elf)
        {
            if (elf.Length < Elf64HeaderSize || elf[0] != 0x7f || elf[1] != (byte)'E' || elf[2] != (byte)'L' || elf[3] != (byte)'F')
                throw Malformed("not an ELF file");
            if (elf[4] != 2) throw Malformed("not a 64-bit ELF file (EI_CLASS != ELFCLASS64)");
            if (elf[5] != 1) throw Malformed("not a little-endian ELF file (EI_DATA != ELFDATA2LSB)");

            ulong shoff = ReadU64(elf, 0x28);
            int shentsize = ReadU16(elf, 0x3A);
            long shnum = ReadU16(elf, 0x3C);
            if (shoff == 0) return new List<Section>();  // no section header table
            if (shentsize < Elf64ShdrSize) throw Malformed($"e_shentsize {shentsize} < {Elf64ShdrSize}");
            if (shoff > (ulong)elf.Length) throw Malformed($"e_shoff 0x{shoff:x} is past the end of the file");
            if (shnum == 0) shnum = (long)ReadU64(elf, (long)shoff + 32);  // >= 0xff00 sections: count is in section 0's sh_size
            if (shnum > ((long)elf.Length - (long)shoff) / shentsize)
                throw Malformed($"section header table ({shnum} x {shentsize} bytes at 0x{shoff:x}) runs past the end of the file");

            var sections = new List<Section>();
            for (long i = 0; i < shnum; i++)
            {
                long h = (long)shoff + i * shentsize;
                var s = new Section
                {
                    Type = ReadU32(elf, h + 4),
                    Link = ReadU32(elf, h + 40),
                    Info = ReadU32(elf, h + 44),
                };
                ulong offset = ReadU64(elf, h + 24), size = ReadU64(elf, h + 32);
                // SHT_NOBITS (.bss) occupies no file space; only sections we read need to lie inside the file.
                if (s.Type == ShtStrtab || s.Type == ShtGnuVerdef || s.Type == ShtGnuVerneed)
                {
                    if (offset > (ulong)elf.Length || size > (ulong)elf.Length - offset)
                        throw Malformed($"section {i} (offset 0x{offset:x}, size 0x{size:x}) runs past the end of the file");
                    s.Offset = (long)offset;
                    s.Size = (long)size;
                }
                sections.Add(s);
            }
            return sections;
        }

        static Section LinkedStringTable(List<Section> sections, Section sec)
        {
            if (sec.Link >= sections.Count || sections[(int)sec.Link].Type != ShtStrtab)
                throw Malformed($"sh_link {sec.Link} of a version section does not name a string table");
            return sections[(int)sec.Link];
        }

        /// <summary>
        /// Visits <paramref name="count"/> records of a chain that starts at <paramref name="first"/>; the
        /// visitor returns the byte offset from the current record to the next one. Each record must lie
        /// inside <paramref name="sec"/>, and a zero offset before the last record (which would visit the same
        /// record again) is rejected, so a corrupt chain can neither read out of bounds nor loop.
        /// </summary>
        static void ForEachRecord(byte[] elf, Section sec, long first, uint count, int recordSize, string what, Func<long, uint> visit)
        {
            if (count == 0) return;
            if (first < sec.Offset || first > sec.End - recordSize)
                throw Malformed($"{what} record at 0x{first:x} lies outside its section");
            long at = first;
            for (uint i = 0; i < count; i++)
            {
                uint next = visit(at);
                if (i + 1 == count) break;
                if (next == 0) throw Malformed($"{what} chain ends after {i + 1} of {count} records");
                at = Advance(sec, at, next, recordSize, what + " next");
            }
        }

        /// <summary><paramref name="from"/> + <paramref name="delta"/>, checked to leave room for a record inside the section.</summary>
        static long Advance(Section sec, long from, uint delta, int recordSize, string field)
        {
            long to = from + delta;  // long: cannot overflow (from < 2^31, delta < 2^32)
            if (to > sec.End - recordSize)
                throw Malformed($"{field} 0x{delta:x} at 0x{from:x} points outside its section");
            return to;
        }

        static string ReadString(byte[] elf, Section strtab, uint index)
        {
            if (index >= strtab.Size) throw Malformed($"string index 0x{index:x} is outside the string table");
            long start = strtab.Offset + index;
            long end = start;
            while (end < strtab.End && elf[end] != 0) end++;
            if (end == strtab.End) throw Malformed($"string at 0x{start:x} is not NUL-terminated inside its table");
            return Encoding.UTF8.GetString(elf, (int)start, (int)(end - start));
        }

        static ushort ReadU16(byte[] d, long at)
        {
            Check(d, at, 2);
            return (ushort)(d[at] | d[at + 1] << 8);
        }

        static uint ReadU32(byte[] d, long at)
        {
            Check(d, at, 4);
            return (uint)(d[at] | d[at + 1] << 8 | d[at + 2] << 16 | d[at + 3] << 24);
        }

        static ulong ReadU64(byte[] d, long at) => ReadU32(d, at) | (ulong)ReadU32(d, at + 4) << 32;

        static void Check(byte[] d, long at, int size)
        {
            if (at < 0 || at > d.Length - size) throw Malformed($"read of {size} bytes at 0x{at:x} is past the end of the file");
        }

        static InvalidDataException Malformed(string why) => new InvalidDataException("Malformed ELF file: " + why + ".");
    }
}

#if !ELF_PATCHER_WITHOUT_TASK
namespace PeftSharp.Build
{
    using Microsoft.Build.Framework;
    using Microsoft.Build.Utilities;

    /// <summary>
    /// MSBuild task (see build/FixLibTorchSharp.targets): if this is Linux and the system libstdc++ lacks
    /// <see cref="Version"/>, marks that version requirement weak in each of <see cref="Files"/>.
    /// </summary>
    public class MarkVersionNeedWeak : Task
    {
        [Required] public ITaskItem[] Files { get; set; } = Array.Empty<ITaskItem>();
        [Required] public string Version { get; set; } = "";
        /// <summary>Patch even when the system libstdc++ defines <see cref="Version"/> (for outputs that run elsewhere, e.g. the .NET tool package).</summary>
        public bool Always { get; set; }

        public override bool Execute()
        {
            if (!System.Runtime.InteropServices.RuntimeInformation.IsOSPlatform(System.Runtime.InteropServices.OSPlatform.Linux))
                return true;
            var libstdcxx = ElfVersionNeedPatcher.FindSystemLibStdCxx();
            if (Always)
            {
                foreach (var item in Files) Patch(item.GetMetadata("FullPath"), "built to run on other machines");
                return true;
            }
            if (libstdcxx == null)
            {
                Log.LogMessage(MessageImportance.Low, $"No system libstdc++.so.6 found; not patching {Version} requirements.");
                return true;
            }
            try
            {
                if (ElfVersionNeedPatcher.DefinesVersion(libstdcxx, Version))
                {
                    Log.LogMessage(MessageImportance.Low, $"{libstdcxx} defines {Version}; nothing to patch.");
                    return true;
                }
            }
            catch (Exception e) when (e is IOException || e is InvalidDataException || e is UnauthorizedAccessException)
            {
                Log.LogWarning($"Could not read {libstdcxx} ({e.Message}); not patching {Version} requirements.");
                return true;
            }

            foreach (var item in Files) Patch(item.GetMetadata("FullPath"), $"{libstdcxx} lacks {Version}");
            return true;
        }

        void Patch(string path, string reason)
        {
            try
            {
                int changed = ElfVersionNeedPatcher.MarkVersionNeedWeak(path, Version);
                if (changed > 0)
                    Log.LogMessage(MessageImportance.High,
                        $"Marked the {Version} requirement of {path} weak ({reason}; see docs/troubleshooting-glibcxx.md).");
            }
            catch (Exception e) when (e is IOException || e is InvalidDataException || e is UnauthorizedAccessException)
            {
                // A warning, not an error: the build output is still usable on systems with a newer libstdc++.
                Log.LogWarning($"Could not mark the {Version} requirement of {path} weak: {e.Message}");
            }
        }
    }
}
#endif
