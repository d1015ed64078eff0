// Live data: a Server-Sent Events stream when the controller has one, else the same
// JSON fetched every interval. Either way `onData` gets each answer and `onState`
// says whether the page is `live` or `retrying` (the controller is unreachable; the
// page says so and keeps trying by itself).

/**
 * stream: the SSE URL; event: its event's name; poll: the JSON URL answering the
 * same; interval: ms between polls, and before reopening a stream the server closed.
 * Returns a function that stops everything.
 */
export function subscribe({ stream, event, poll, interval = 2000, onData, onState }) {
  let stopped = false;
  let source = null;
  let timer = null;

  function deliver(doc) {
    if (stopped) return;
    onState('live');
    onData(doc);
  }

  function polling() {
    const tick = async () => {
      if (stopped) return;
      try {
        const rsp = await fetch(poll, { headers: { accept: 'application/json' }, cache: 'no-store' });
        if (!rsp.ok) throw new Error(`${poll} answered ${rsp.status}`);
        deliver(await rsp.json());
      } catch (e) {
        if (!stopped) onState('retrying', e);
      }
      if (!stopped) timer = setTimeout(tick, interval);
    };
    tick();
  }

  function streaming() {
    let received = false;
    source = new EventSource(stream);
    source.addEventListener(event, (e) => {
      let doc;
      try {
        doc = JSON.parse(e.data);
      } catch (err) {
        console.error(`${stream}: an event that is not JSON`, err);
        return;
      }
      received = true;
      deliver(doc);
    });
    source.addEventListener('error', () => {
      if (stopped) return;
      if (!received) {
        // Nothing ever came: either a controller without the stream, or no
        // controller (yet) at all. Asked once, the stream's own URL tells them apart.
        source.close();
        source = null;
        absent().then((gone) => {
          if (stopped) return;
          if (gone) {
            polling();
          } else {
            onState('retrying');
            timer = setTimeout(streaming, interval);
          }
        });
        return;
      }
      onState('retrying');
      if (source.readyState === EventSource.CLOSED) {
        // Refused rather than dropped: the browser will not retry by itself.
        source = null;
        timer = setTimeout(streaming, interval);
      }
    });
  }

  // Whether the controller answers but has no such stream (404, 405): an older
  // controller, polled for the rest of the page's life. Anything else (unreachable,
  // a 5xx while it starts) is worth another try of the stream.
  async function absent() {
    const ask = new AbortController();
    try {
      const rsp = await fetch(stream, { signal: ask.signal, cache: 'no-store' });
      return rsp.status === 404 || rsp.status === 405;
    } catch {
      return false;
    } finally {
      // A stream that does answer is not read here: the next EventSource reads it.
      ask.abort();
    }
  }

  if (stream && typeof EventSource === 'function') streaming();
  else polling();

  return () => {
    stopped = true;
    source?.close();
    clearTimeout(timer);
  };
}
