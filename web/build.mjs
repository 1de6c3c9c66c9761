// Builds the web app: generates TypeScript from proto/client.capnp with capnp-es, then bundles
// src/main.ts with esbuild into OUT (default: ./dist) next to index.html and app.css.
//   node build.mjs [--out DIR]
import { execFileSync } from "node:child_process";
import { copyFileSync, mkdirSync, readFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";
import * as esbuild from "esbuild";

const here = dirname(fileURLToPath(import.meta.url));
const args = process.argv.slice(2);
const outIndex = args.indexOf("--out");
const out = resolve(outIndex >= 0 ? args[outIndex + 1] : join(here, "dist"));
const gen = join(here, "src", "gen");
const proto = join(here, "..", "proto");

mkdirSync(gen, { recursive: true });
// capnp-es drives the `capnp` compiler (Debian's capnproto) and writes src/gen/client.ts.
execFileSync(
  process.execPath,
  [
    join(here, "node_modules", "capnp-es", "dist", "compiler", "capnpc-js.mjs"),
    join(proto, "client.capnp"),
    `-ots:${gen}`,
    `--src-prefix=${proto}`,
  ],
  { stdio: ["ignore", "ignore", "inherit"] },
);

mkdirSync(out, { recursive: true });
await esbuild.build({
  entryPoints: [join(here, "src", "main.ts")],
  bundle: true,
  minify: true,
  format: "esm",
  target: "es2022",
  outfile: join(out, "app.js"),
  logLevel: "warning",
});
copyFileSync(join(here, "src", "index.html"), join(out, "index.html"));
copyFileSync(join(here, "src", "app.css"), join(out, "app.css"));

const js = readFileSync(join(out, "app.js"));
console.log(
  `web app -> ${out}: app.js ${(js.length / 1024).toFixed(1)} KB, ` +
    `${(gzipSync(js).length / 1024).toFixed(1)} KB gzipped`,
);
