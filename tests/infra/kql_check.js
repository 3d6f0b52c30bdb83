// Compiles KQL with Microsoft's Kusto parser (@kusto/language-service-next) against a given schema.
// Reads {"tables": {"name": "(column:type, ...)"}, "queries": {"where": "text"}} on stdin and prints
// {"where": [{"code", "severity", "message", "start", "length"}, ...]} on stdout: every diagnostic of each query.
"use strict";

require("@kusto/language-service-next/bridge.js");
require("@kusto/language-service-next/Kusto.Language.Bridge.js");

const Kusto = globalThis.Kusto;
const Symbols = Kusto.Language.Symbols;

function read(stream) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    stream.on("data", (chunk) => chunks.push(chunk));
    stream.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
    stream.on("error", reject);
  });
}

function globalsFor(tables) {
  const symbols = Object.entries(tables).map(([name, schema]) => new Symbols.TableSymbol.$ctor7(name, schema, null));
  const database = new Symbols.DatabaseSymbol.$ctor2("telemetry", null, symbols);
  return Kusto.Language.GlobalState.Default.WithDatabase(database);
}

function diagnostics(text, globals) {
  const found = Kusto.Language.KustoCode.ParseAndAnalyze(text, globals).GetDiagnostics();
  const out = [];
  for (let i = 0; i < found.Count; i++) {
    const d = found.getItem(i);
    out.push({ code: d.Code, severity: d.Severity, message: d.Message, start: d.Start, length: d.Length });
  }
  return out;
}

read(process.stdin).then((input) => {
  const request = JSON.parse(input);
  const globals = globalsFor(request.tables);
  const result = {};
  for (const [where, text] of Object.entries(request.queries)) {
    result[where] = diagnostics(text, globals);
  }
  process.stdout.write(JSON.stringify(result));
});
