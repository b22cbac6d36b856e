// Validate glTF/GLB files with the Khronos glTF validator and print one JSON report.
//
//   node tools/gltf/validate.mjs FILE.glb [FILE.gltf ...]
//
// Prints {"validator": VERSION, "files": [{file, errors, warnings, infos, hints,
// messages: [{code, severity, message, pointer}]}]} on stdout. Exit status: 0 when
// every file has no errors and no warnings, 1 when some file has either, 2 when a
// file cannot be read or is not glTF at all (its entry then holds "fatal").
// Install once with: npm ci --prefix tools/gltf
import fs from "node:fs";
import path from "node:path";
import validator from "gltf-validator";

const SEVERITY = ["error", "warning", "info", "hint"];

async function validateFile(file) {
  const bytes = new Uint8Array(fs.readFileSync(file));
  const report = await validator.validateBytes(bytes, {
    uri: path.basename(file),
    maxIssues: 100,
    // .gltf files may point at buffers and images beside them
    externalResourceFunction: (uri) =>
      fs.promises.readFile(path.resolve(path.dirname(file), decodeURIComponent(uri))).then((b) => new Uint8Array(b)),
  });
  const issues = report.issues;
  return {
    file,
    errors: issues.numErrors,
    warnings: issues.numWarnings,
    infos: issues.numInfos,
    hints: issues.numHints,
    messages: issues.messages.map((m) => ({
      code: m.code,
      severity: SEVERITY[m.severity] ?? String(m.severity),
      message: m.message,
      pointer: m.pointer ?? null,
    })),
  };
}

const files = process.argv.slice(2);
if (files.length === 0) {
  console.error("usage: node validate.mjs FILE.glb [FILE ...]");
  process.exit(2);
}
const out = { validator: validator.version(), files: [] };
let status = 0;
for (const file of files) {
  try {
    const r = await validateFile(file);
    if (r.errors > 0 || r.warnings > 0) status = Math.max(status, 1);
    out.files.push(r);
  } catch (e) {
    status = 2;
    out.files.push({ file, fatal: String(e && e.message ? e.message : e) });
  }
}
console.log(JSON.stringify(out, null, 2));
process.exit(status);
