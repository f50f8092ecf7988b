#!/usr/bin/env bash
# Builds the API reference site from the XML documentation of the packed libraries (PeftSharp, PeftSharp.Jinja)
# with docfx (a local .NET tool, dotnet-tools.json) into docs/api/ (git-ignored). Broken cross-references and
# other docfx warnings fail the build. Open docs/api/index.html, or serve it: dotnet docfx serve docs/api
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
dotnet tool restore >/dev/null
rm -rf docs/api docs/apidocs/obj
dotnet docfx docs/apidocs/docfx.json --warningsAsErrors
echo "api-docs: $(find docs/api/api -name '*.html' | wc -l) pages in docs/api/" >&2
