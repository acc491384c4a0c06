// Parses docs/asyncapi.json with the official AsyncAPI parser and its default rules (what every
// tool built on it does): exit 1 on any diagnostic of severity error, print the warnings.
// Usage: node .ci/validate-asyncapi.mjs [path], with @asyncapi/parser installed in .ci/node.
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(path.join(here, 'node', 'package.json'));
const { Parser, DiagnosticSeverity } = require('@asyncapi/parser');

const file = process.argv[2] ?? path.join(here, '..', 'docs', 'asyncapi.json');
const text = await readFile(file, 'utf8');
const { document, diagnostics } = await new Parser().parse(text, { source: file });
const names = { [DiagnosticSeverity.Error]: 'error', [DiagnosticSeverity.Warning]: 'warning',
                [DiagnosticSeverity.Information]: 'info', [DiagnosticSeverity.Hint]: 'hint' };
let errors = 0;
for (const d of diagnostics) {
  if (d.severity === DiagnosticSeverity.Error) errors += 1;
  if (d.severity <= DiagnosticSeverity.Warning) {
    console.log(`${names[d.severity]}: ${d.code}: ${d.message} at /${(d.path ?? []).join('/')}`);
  }
}
if (errors > 0 || document === undefined) {
  console.log(`${file}: ${errors} error(s)${document === undefined ? ', no document' : ''}`);
  process.exit(1);
}
console.log(`${file}: AsyncAPI ${document.version()} parsed, ${diagnostics.length} diagnostic(s), no errors`);
