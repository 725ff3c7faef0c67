// Drives the review page (GET /review) in headless Chromium over the DevTools protocol,
// as a reviewer would: types the token and name, loads the queue, labels the first item
// with the key "1", skips the second with "s", labels the third by clicking a class button.
// Prints one line per labelled item: "labelled <id> <label>" and "skipped <id>".
// Usage: node --experimental-websocket review_page.js WS_URL PAGE_URL TOKEN REVIEWER
// (no npm packages: Node's own WebSocket).
'use strict';
const [wsUrl, pageUrl, token, reviewer] = process.argv.slice(2);
const sleep = ms => new Promise(r => setTimeout(r, ms));
let nextId = 1;
const pending = new Map();
const ws = new WebSocket(wsUrl);
function send(method, params = {}, sessionId) {
    const id = nextId++;
    const msg = { id, method, params };
    if (sessionId) msg.sessionId = sessionId;
    ws.send(JSON.stringify(msg));
    return new Promise((resolve, reject) => pending.set(id, { resolve, reject, method }));
}
ws.onmessage = ev => {
    const m = JSON.parse(ev.data);
    if (m.id && pending.has(m.id)) {
        const p = pending.get(m.id);
        pending.delete(m.id);
        if (m.error) p.reject(new Error(p.method + ': ' + m.error.message));
        else p.resolve(m.result);
    }
};
function fail(msg) { console.log('FAIL ' + msg); process.exit(1); }

async function main() {
    await new Promise((res, rej) => { ws.onopen = res; ws.onerror = () => rej(new Error('cannot connect ' + wsUrl)); });
    const { targetId } = await send('Target.createTarget', { url: 'about:blank' });
    const { sessionId } = await send('Target.attachToTarget', { targetId, flatten: true });
    const S = (m, p) => send(m, p, sessionId);
    const js = async expr => {
        const r = await S('Runtime.evaluate', { expression: expr, returnByValue: true, awaitPromise: true });
        if (r.exceptionDetails) throw new Error('page script: ' + JSON.stringify(r.exceptionDetails).slice(0, 300));
        return r.result.value;
    };
    const waitFor = async (expr, what, ms = 30000) => {
        for (let t = 0; t < ms; t += 100) {
            if (await js(expr)) return;
            await sleep(100);
        }
        fail('timed out waiting for ' + what + '; status: ' + await js("document.getElementById('status').textContent"));
    };
    const key = async (k, code, vk) => {
        await S('Input.dispatchKeyEvent', { type: 'keyDown', key: k, code, text: k, windowsVirtualKeyCode: vk });
        await S('Input.dispatchKeyEvent', { type: 'keyUp', key: k, code, windowsVirtualKeyCode: vk });
    };
    const click = async selector => {
        const box = await js(`(() => { const r = document.querySelector(${JSON.stringify(selector)}).getBoundingClientRect();
                                         return [r.x + r.width / 2, r.y + r.height / 2]; })()`);
        for (const type of ['mousePressed', 'mouseReleased'])
            await S('Input.dispatchMouseEvent', { type, x: box[0], y: box[1], button: 'left', clickCount: 1 });
    };
    await S('Page.enable');
    await S('Runtime.enable');
    await S('Page.navigate', { url: pageUrl });
    await waitFor("document.readyState === 'complete' && !!document.getElementById('start')", 'the page');
    // the reviewer types the token and the name, then presses "load queue"
    await js("document.getElementById('token').focus()");
    await S('Input.insertText', { text: token });
    await js("document.getElementById('reviewer').focus()");
    await S('Input.insertText', { text: reviewer });
    await click('#start');
    await waitFor("!document.getElementById('item').hidden && document.getElementById('itemid').textContent !== ''", 'an item');
    await waitFor("document.getElementById('img').naturalWidth > 0", 'the image');
    const classes = await js("[...document.querySelectorAll('#buttons button')].map(b => b.dataset.label)");
    if (!classes || classes.length < 3) fail('class buttons: ' + JSON.stringify(classes));
    const pred = await js("document.getElementById('pred').textContent");
    if (!classes.includes(pred)) fail('shown prediction ' + pred + ' is not a class');
    await js('document.activeElement.blur()');
    // item 1: key "1"
    let id = await js("document.getElementById('itemid').textContent");
    await key('1', 'Digit1', 49);
    await waitFor(`document.getElementById('itemid').textContent !== '${id}'`, 'the next item after key 1');
    console.log('labelled ' + id + ' ' + classes[0]);
    // item 2: key "s"
    id = await js("document.getElementById('itemid').textContent");
    await key('s', 'KeyS', 83);
    await waitFor(`document.getElementById('itemid').textContent !== '${id}'`, 'the next item after s');
    console.log('skipped ' + id);
    // item 3: click the third class button
    id = await js("document.getElementById('itemid').textContent");
    await click(`#buttons button[data-label=${JSON.stringify(classes[2])}]`);
    await waitFor(`document.getElementById('itemid').textContent !== '${id}' || document.getElementById('item').hidden`,
                  'the next item after a click');
    console.log('labelled ' + id + ' ' + classes[2]);
    await waitFor("/labelled 2|2 labelled/.test(document.getElementById('status').textContent)", 'the count of 2');
    await send('Target.closeTarget', { targetId });
    ws.close();
    process.exit(0);
}
main().catch(e => fail(e.message));
