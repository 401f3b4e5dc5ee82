// kinto-admin's signoff UI against our stack, in Debian's Chromium: one user requests a review of a collection,
// another approves it, each in their own browser session, by the buttons and dialogs a person uses.
//
// Usage: node signoff.mjs ADMIN_URL BUCKET COLLECTION EDITOR:PASSWORD REVIEWER:PASSWORD SCREENSHOT_DIR
// Prints one line per step; exits 1 (with a screenshot of the page) at the first step that does not happen; the
// page after the approval is kept as approved.png.
import { chromium } from "playwright-core";

const [adminUrl, bucket, collection, editor, reviewer, screenshots] = process.argv.slice(2);
const records = `${adminUrl}#/buckets/${bucket}/collections/${collection}/records`;
// How long a step may take: the PATCH behind a button returns once the service signed (synchronous answers).
const STEP_MS = 60_000;

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  // Without the background-networking flags Chromium keeps calling Google's hosts, which a closed network refuses.
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
});

let current = null;
// What the page logged as errors (failed requests, exceptions), printed with a failed step.
const pageErrors = [];
async function step(name, action) {
  try {
    await action();
    console.log(`ok: ${name}`);
  } catch (error) {
    console.log(`FAILED: ${name}: ${error.message.split("\n")[0]}`);
    if (current) {
      await current.screenshot({ path: `${screenshots}/failed.png`, fullPage: true }).catch(() => {});
      console.log(`page text: ${(await current.locator("body").innerText().catch(() => "")).slice(0, 2000)}`);
      console.log(`page errors:\n${pageErrors.join("\n")}`);
    }
    await browser.close();
    process.exit(1);
  }
}

// A new browser session (its own storage, as another person's browser) signed in with Basic auth.
async function signIn(credentials) {
  const [user, password] = credentials.split(":");
  const context = await browser.newContext();
  const page = await context.newPage();
  page.setDefaultTimeout(STEP_MS);
  page.on("console", (message) => message.type() === "error" && pageErrors.push(`${user}: ${message.text()}`));
  page.on("pageerror", (error) => pageErrors.push(`${user}: ${error.message}`));
  page.on("response", (response) => response.status() >= 400 && pageErrors.push(`${user}: ${response.status()} ${response.url()}`));
  current = page;
  await step(`${user} signs in`, async () => {
    await page.goto(adminUrl);
    await page.getByLabel("Basic Auth").check();
    await page.getByLabel("Username").fill(user);
    await page.getByLabel("Password").fill(password);
    await page.getByRole("button", { name: /Sign in/ }).click();
    // Signed in: the session bar offers to log out.
    await page.getByText("Logout").waitFor();
  });
  return page;
}

// The notification kinto-admin shows after an action, or its error.
async function notified(page, text) {
  const error = page.locator(".notifications .alert-danger");
  await Promise.race([
    page.locator(".notifications").getByText(text).waitFor(),
    error.waitFor().then(async () => {
      throw new Error(`kinto-admin shows an error: ${await error.innerText()}`);
    }),
  ]);
}

const editorPage = await signIn(editor);
await step("the editor requests a review", async () => {
  await editorPage.goto(records);
  await editorPage.getByRole("button", { name: "Request review..." }).click();
  await editorPage.getByPlaceholder("Comment...").fill("Please check the new records.");
  await editorPage.getByRole("button", { name: "Request review", exact: true }).click();
  await notified(editorPage, "Review requested.");
});

const reviewerPage = await signIn(reviewer);
await step("the reviewer opens the review and sees the editor's comment", async () => {
  await reviewerPage.goto(records);
  await reviewerPage.getByRole("link", { name: "Review Changes" }).click();
  await reviewerPage.getByText("Please check the new records.").first().waitFor();
});
await step("the reviewer approves", async () => {
  await reviewerPage.getByRole("button", { name: "Approve..." }).click();
  // Back on the records page, the workflow's last step shows who approved.
  await reviewerPage.locator("strong", { hasText: "Approved:" }).waitFor();
  await reviewerPage.screenshot({ path: `${screenshots}/approved.png`, fullPage: true });
});

await browser.close();
console.log("signoff: done");
