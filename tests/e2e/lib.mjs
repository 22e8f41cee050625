// What the browser tests share: Debian's Chromium, Gradio 3.41's and 4's ways of showing a
// dropdown's options, the UI's login form, and "ready" as our script's own mark.
import { chromium } from "playwright-core";

export async function launch() {
    return chromium.launch({
        executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
        args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
               "--disable-sync", "--no-first-run", "--disable-quic"],
    });
}

// Gradio 3.41 (A1111) marks a dropdown's options li[data-value]; Gradio 4 (Forge) li[role=option]
// with the choice as aria-label.
export async function pick(page, id, value) {
    await page.locator(`#${id} input`).first().click();
    await page.locator(`#${id} li[data-value="${value}"], #${id} li[role=option][aria-label="${value}"]`)
        .first().click();
}

// The UI's own login (--gradio-auth), when the page shows it.
export async function logIn(page, user, password) {
    const secret = page.locator("input[type=password]");
    await secret.waitFor({ timeout: 180000 });
    await page.locator("input[type=text], input:not([type])").first().fill(user);
    await secret.fill(password);
    await page.locator("button", { hasText: /log ?in/i }).first().click();
}

// Ready when our script has attached to the accordion (javascript/hires_upscale.js sets the mark
// once the page's UI is loaded and its data has come). Never "networkidle": Gradio 4 keeps a
// /heartbeat stream open, so the network is never idle there.
export async function open(page, address, login) {
    await page.goto(address, { waitUntil: "domcontentloaded", timeout: 180000 });
    if (login) await logIn(page, ...login);
    const accordion = page.locator("#hires_upscale_txt2img_enabled[data-hires-upscale-attached]");
    await accordion.waitFor({ timeout: 180000 });
    return accordion;
}

export async function setNumber(page, id, value) {
    const input = page.locator(`#${id} input[type=number]`).first();
    await input.fill(String(value));
    await input.press("Tab");
}
