// Builds the dashboard page into dist/web/: web/main.ts bundled by esbuild
// (connect-web, the generated stubs, ECharts' modular build, report-charts)
// into one minified ES module, next to the page's HTML and CSS. Run by the root
// `npm run build` after `tsc -b` (which type-checks web/ and compiles the
// package's src/ that the bundle imports).
import { copyFile, mkdir } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";

const at = (path) => fileURLToPath(new URL(`../${path}`, import.meta.url));
const out = at("dist/web");

await mkdir(out, { recursive: true });
await Promise.all([
  build({
    entryPoints: [at("web/main.ts")],
    outfile: `${out}/app.js`,
    bundle: true,
    format: "esm",
    platform: "browser",
    target: "es2022",
    minify: true,
    sourcemap: "linked",
    legalComments: "linked",
    logLevel: "warning",
  }),
  copyFile(at("web/index.html"), `${out}/index.html`),
  copyFile(at("web/style.css"), `${out}/style.css`),
]);
