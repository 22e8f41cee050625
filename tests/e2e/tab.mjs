// The Hires upscale tab driven as a person drives it, in Debian's Chromium:
//   node tests/e2e/tab.mjs URL OUTDIR STEPS_JSON
// STEPS_JSON lists runs: {"files": [paths] | [], "folder": "", "output": "", "denoise": 0.3,
// "steps": 1, "reload": true (a fresh page first)}; files already in the box stay there. For each run it fills the tab, presses
// Upscale, waits for the report table and reads its rows and the gallery's size. Between runs it
// writes {"ready": k} to OUTDIR/progress.json and waits for OUTDIR/go-k (the test arms faults or
// removes files meanwhile). Prints one JSON line: the rows and gallery counts of every run.
import { existsSync, writeFileSync } from "node:fs";
import { launch, open, setNumber } from "./lib.mjs";

const [url, out, stepsJson] = process.argv.slice(2);
const runs = JSON.parse(stepsJson);
const seen = { runs: [] };
const browser = await launch();

async function waitForFile(path) {
    for (let i = 0; i < 1200 && !existsSync(path); i++) await new Promise((r) => setTimeout(r, 250));
}

const page = await browser.newPage({ viewport: { width: 1400, height: 1100 } });
try {
    await open(page, url + "/");
    await page.locator("button", { hasText: "Hires upscale" }).first().click();
    await page.locator("#hires_upscale_tab_run").waitFor({ state: "visible", timeout: 30000 });
    let inBox = "[]";  // the files the box holds: a box with files shows them instead of its file input
    for (const [index, run] of runs.entries()) {
        writeFileSync(`${out}/progress.json`, JSON.stringify({ ready: index }));
        await waitForFile(`${out}/go-${index}`);
        if (run.reload) {  // a fresh page: the file box empty again
            await open(page, url + "/");
            await page.locator("button", { hasText: "Hires upscale" }).first().click();
            await page.locator("#hires_upscale_tab_run").waitFor({ state: "visible", timeout: 30000 });
            inBox = "[]";
        }
        if (run.files.length && JSON.stringify(run.files) !== inBox) {  // the same again: press Upscale again
            await page.locator("#hires_upscale_tab_files input[type=file]").first().setInputFiles(run.files);
            // the tab reads what it dropped before anything runs
            await page.locator("#hires_upscale_tab_dropped table").first().waitFor({ timeout: 60000 });
            inBox = JSON.stringify(run.files);
        }
        await page.locator("#hires_upscale_tab_folder textarea, #hires_upscale_tab_folder input").first().fill(run.folder || "");
        await page.locator("#hires_upscale_tab_output_folder textarea, #hires_upscale_tab_output_folder input").first()
            .fill(run.output || "");
        await setNumber(page, "hires_upscale_tab_denoise", run.denoise);
        await setNumber(page, "hires_upscale_tab_hires_steps", run.steps);
        // Done when a new report replaces the marked one: while the run goes on, the old one stays
        // under the host's progress overlay (which changes the element's HTML, not its report).
        await page.evaluate(() => document.querySelectorAll("#hires_upscale_tab_report *")
            .forEach((node) => node.setAttribute("data-before", "")));
        await page.locator("#hires_upscale_tab_run").click();
        await page.waitForFunction(() => document.querySelector(
            "#hires_upscale_tab_report table.hires-upscale-report:not([data-before]), " +
            "#hires_upscale_tab_report .hires-upscale-advice:not([data-before])"), null, { timeout: 600000 });
        const rows = await page.locator("#hires_upscale_tab_report tbody tr").evaluateAll((trs) =>
            trs.map((tr) => Array.from(tr.querySelectorAll("td")).map((td) => td.innerText)));
        const gallery = await page.locator("#hires_upscale_tab_gallery img").count();
        seen.runs.push({ rows, gallery });
        await page.screenshot({ path: `${out}/tab-run-${index}.png` });
    }
    console.log(JSON.stringify(seen));
} catch (error) {
    await page.screenshot({ path: `${out}/tab-failed.png` }).catch(() => {});  // what the page showed
    throw error;
} finally {
    await browser.close();
}
