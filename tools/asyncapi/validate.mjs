#!/usr/bin/env node
// Validate an AsyncAPI document with the official parser (@asyncapi/parser).
//
// Usage: node tools/asyncapi/validate.mjs [FILE | -] [--warnings]
//   FILE (or stdin when absent or "-") holds the document, JSON or YAML.
//   Every diagnostic of severity error is printed as "error: PATH: MESSAGE" on stderr, and the
//   exit code is 1 if there is any, 0 otherwise; --warnings prints the other severities too.
//   Exit code 2: usage, or the file could not be read.
//
// The parser is a CommonJS package: its default export carries the named ones.
import { readFileSync } from 'node:fs';
import parserPackage from '@asyncapi/parser';

const { Parser, DiagnosticSeverity } = parserPackage;
const SEVERITY_NAMES = { 0: 'error', 1: 'warning', 2: 'information', 3: 'hint' };

function readDocument(source) {
  try {
    return readFileSync(source === '-' ? 0 : source, 'utf8');
  } catch (error) {
    console.error(`validate: cannot read ${source === '-' ? 'stdin' : source}: ${error.message}`);
    process.exit(2);
  }
}

function describe(diagnostic) {
  const severity = SEVERITY_NAMES[diagnostic.severity] ?? String(diagnostic.severity);
  const path = diagnostic.path && diagnostic.path.length > 0 ? diagnostic.path.join('.') : '(root)';
  return `${severity}: ${path}: ${diagnostic.message} [${diagnostic.code}]`;
}

async function main(argv) {
  const flags = argv.filter((arg) => arg.startsWith('--'));
  const sources = argv.filter((arg) => !arg.startsWith('--') || arg === '-');
  const unknown = flags.filter((flag) => flag !== '--warnings');
  if (unknown.length > 0 || sources.length > 1) {
    console.error('usage: node validate.mjs [FILE | -] [--warnings]');
    process.exit(2);
  }
  const text = readDocument(sources[0] ?? '-');
  const { document, diagnostics } = await new Parser().parse(text);
  const errors = diagnostics.filter((d) => d.severity === DiagnosticSeverity.Error);
  const shown = flags.includes('--warnings') ? diagnostics : errors;
  for (const diagnostic of shown) {
    console.error(describe(diagnostic));
  }
  // A document the parser could not build is refused even if no diagnostic says why.
  if (errors.length > 0 || document === undefined) {
    console.error(`validate: refused (${errors.length} error(s))`);
    process.exit(1);
  }
  console.log(`validate: ok (AsyncAPI ${document.version()}, ${diagnostics.length} other diagnostic(s))`);
}

await main(process.argv.slice(2));
