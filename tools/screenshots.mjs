// Screenshots of the accordion and the tab from a running WebUI, in Debian's Chromium.
//   node tools/screenshots.mjs http://127.0.0.1:7860 docs/ [UPSCALER]
// (python tests/webui/harness.py runs a test WebUI and prints its URL.)
import { chromium } from "playwright-core";

const [url = "http://127.0.0.1:7860", out = "docs", upscaler] = process.argv.slice(2);
const browser = await chromium.launch({
    executablePath: "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
           "--disable-sync", "--no-first-run", "--disable-quic"],
});
try {
    const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
    await page.goto(url, { waitUntil: "networkidle", timeout: 120000 });
    await page.waitForSelector("#hires_upscale_txt2img_enabled", { timeout: 120000 });

    // Open the accordion: its label toggles it (and the hidden enable checkbox).
    const accordion = page.locator("#hires_upscale_txt2img_enabled");
    await accordion.locator(".label-wrap").first().click();
    await page.locator("#hires_upscale_txt2img_upscaler").waitFor({ state: "visible" });
    if (upscaler) {  // the test WebUI lists a deliberately broken model first
        await page.locator("#hires_upscale_txt2img_upscaler input").click();
        await page.locator("#hires_upscale_txt2img_upscaler ul.options li", { hasText: upscaler }).first().click();
    }
    // and its "Second pass overrides" (checkpoint, prompts, CFG, seed)
    await page.locator("#hires_upscale_txt2img_overrides .label-wrap").first().click();
    await page.locator("#hires_upscale_txt2img_prompt").waitFor({ state: "visible" });
    await accordion.scrollIntoViewIfNeeded();
    await accordion.screenshot({ path: `${out}/accordion.png` });

    await page.getByRole("button", { name: "Hires upscale", exact: true }).click();
    await page.locator("#hires_upscale_tab_run").waitFor({ state: "visible" });
    await page.locator("#tab_hires_upscale_tab").screenshot({ path: `${out}/tab.png` });
    console.log(`wrote ${out}/accordion.png and ${out}/tab.png`);
} finally {
    await browser.close();
}
