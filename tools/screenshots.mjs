// Screenshots of the accordion and the tab from a running WebUI (A1111's Gradio 3 or Forge's Gradio 4),
// in Debian's Chromium:
//   node tools/screenshots.mjs http://127.0.0.1:7860 docs/ [UPSCALER] [PREFIX]
// writes PREFIXaccordion.png and PREFIXtab.png (e.g. PREFIX "forge-").
// (python tests/webui/harness.py [a1111|forge] runs a test WebUI and prints its URL.)
import { chromium } from "playwright-core";

const [url = "http://127.0.0.1:7860", out = "docs", upscaler, prefix = ""] = process.argv.slice(2);
const browser = await chromium.launch({
    executablePath: "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
           "--disable-sync", "--no-first-run", "--disable-quic"],
});
// A dropdown's option: li[data-value] in Gradio 3.41, li[role=option] with an aria-label in Gradio 4.
async function pick(page, id, value) {
    await page.locator(`#${id} input`).first().click();
    await page.locator(`#${id} li[data-value="${value}"], #${id} li[role=option][aria-label="${value}"]`)
        .first().click();
}

try {
    const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
    // Never "networkidle": Gradio 4 keeps a /heartbeat stream open. Our script marks the accordion
    // once the page's UI is loaded and our options came back.
    await page.goto(url, { waitUntil: "domcontentloaded", timeout: 120000 });
    await page.waitForSelector("#hires_upscale_txt2img_enabled[data-hires-upscale-attached]", { timeout: 120000 });

    // Open the accordion: its label toggles it (and the hidden enable checkbox).
    const accordion = page.locator("#hires_upscale_txt2img_enabled");
    await accordion.locator(".label-wrap").first().click();
    await page.locator("#hires_upscale_txt2img_upscaler").waitFor({ state: "visible" });
    if (upscaler) await pick(page, "hires_upscale_txt2img_upscaler", upscaler);  // the test WebUI lists a broken model first
    // and its "Second pass overrides" (checkpoint, prompts, CFG, seed)
    await page.locator("#hires_upscale_txt2img_overrides .label-wrap").first().click();
    await page.locator("#hires_upscale_txt2img_prompt").waitFor({ state: "visible" });
    await accordion.scrollIntoViewIfNeeded();
    await accordion.screenshot({ path: `${out}/${prefix}accordion.png` });

    // the tab bar: buttons in Gradio 3, role="tab" in Gradio 4
    await page.locator("button[role=tab], #tabs > .tab-nav > button, #tabs > div > button")
        .filter({ hasText: /^\s*Hires upscale\s*$/ }).first().click();
    await page.locator("#hires_upscale_tab_run").waitFor({ state: "visible" });
    if (upscaler) await pick(page, "hires_upscale_tab_upscaler", upscaler);
    await page.locator("#tab_hires_upscale_tab").screenshot({ path: `${out}/${prefix}tab.png` });
    console.log(`wrote ${out}/${prefix}accordion.png and ${out}/${prefix}tab.png`);
} finally {
    await browser.close();
}
