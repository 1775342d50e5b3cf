//! The HTTP/1.1 connections of the API socket and of the loopback listener (`/metrics`
//! included), served without hyper's server connection.
//!
//! hyper's HTTP/1 connection holds an 8 KiB read buffer and an 8 KiB write buffer for its
//! whole life, and its dispatcher besides: a held blocking query cost 13.5 KiB of resident
//! memory, 1,000 of them 13.2 MiB (docs/benchmarks.md, "Series scale"). Here a connection holds
//! what its request needs: a read buffer sized to what arrived (1 KiB to start, freed whenever
//! nothing is left in it, so an idle or waiting connection holds none), the request and the
//! handler's future. The answer's head is written with its body when the body is known.
//!
//! What it speaks: HTTP/1.0 and 1.1 requests whose body, if any, has a `Content-Length`;
//! keep-alive (1.1's default, 1.0's when asked) and pipelining (answers in order);
//! `Expect: 100-continue`. An answer is framed by `Content-Length` when its body's length is
//! known, chunked otherwise (to an HTTP/1.0 client: the connection closes after it).
//! What it refuses with a status and one line saying why, then closes: a head that does not
//! parse (400), a head over [`MAX_HEAD_BYTES`] (431), a chunked request body (411), a body over
//! [`MAX_BODY_BYTES`] (413), an `Expect` other than `100-continue` (417), a version other
//! than 1.x (505), a request whose head and body take over [`REQUEST_READ_TIMEOUT`] from its
//! first byte (408). As with hyper's default, a peer that closes while its request is being
//! answered takes the answer with it: a held query ends when its client goes.

use std::time::SystemTime;

use axum::{
    body::{Body, Bytes, HttpBody},
    http::{header, HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, Uri, Version},
    Router,
};
use http_body_util::BodyExt;
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    sync::watch,
};
use tower_service::Service;

/// The longest request head read (request line and header fields).
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// The longest request body read (the router refuses bodies over 4 KiB itself: this bounds
/// what a connection reads before it is asked).
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Header fields in one request, at most.
const MAX_HEADERS: usize = 64;
/// What a read asks for at a time while a head or body is coming.
const READ_BYTES: usize = 1024;
/// A body of known length up to this size goes out in the head's write.
const WITH_HEAD_BYTES: usize = 64 * 1024;
/// A request's head and body arrive within this of its first byte (a connection waiting
/// between requests has no limit: it holds no buffer).
pub const REQUEST_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
const TIMED_OUT: &str = "the request took over 30 s to arrive";

/// Why a connection ended other than by either side closing it in order.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error("the connection failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("refused a request ({status}): {why}")]
    Refused {
        status: StatusCode,
        why: &'static str,
    },
    #[error("the answer's body failed: {0}")]
    Body(axum::Error),
    #[error("the answer's body was not the length its Content-Length said")]
    BodyLength,
}

/// A request head as read.
#[derive(Debug)]
struct Head {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
}

/// Serves requests on `io` with `app` until the peer closes, a request asks to close, or
/// `closing` changes (then the answer in progress, if any, is finished first).
pub async fn serve_connection<I>(
    mut io: I,
    mut app: Router,
    mut closing: watch::Receiver<()>,
) -> Result<(), ConnError>
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let mut buf: Vec<u8> = Vec::new();
    loop {
        // A request head, or the end of the connection.
        let mut deadline = None;
        let head = loop {
            if !buf.is_empty() {
                deadline.get_or_insert_with(|| tokio::time::Instant::now() + REQUEST_READ_TIMEOUT);
                match parse_head(&buf) {
                    Ok(Some((head, len))) => {
                        buf.drain(..len);
                        break head;
                    }
                    Ok(None) if buf.len() < MAX_HEAD_BYTES => {}
                    Ok(None) => {
                        return refuse(
                            &mut io,
                            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                            "the request head is over 16 KiB",
                        )
                        .await
                    }
                    Err((status, why)) => return refuse(&mut io, status, why).await,
                }
            }
            let n = if buf.is_empty() {
                // Between requests: closing ends the connection here.
                tokio::select! {
                    n = read_more(&mut io, &mut buf) => n?,
                    _ = closing.changed() => return Ok(()),
                }
            } else {
                let until = deadline.unwrap_or_else(tokio::time::Instant::now);
                match tokio::time::timeout_at(until, read_more(&mut io, &mut buf)).await {
                    Ok(n) => n?,
                    Err(_) => return refuse(&mut io, StatusCode::REQUEST_TIMEOUT, TIMED_OUT).await,
                }
            };
            if n == 0 {
                // The peer closed, between requests or within a head it will not finish.
                return Ok(());
            }
        };

        // Its body.
        if head.headers.contains_key(header::TRANSFER_ENCODING) {
            return refuse(
                &mut io,
                StatusCode::LENGTH_REQUIRED,
                "a request body needs a Content-Length (chunked bodies are not read)",
            )
            .await;
        }
        let length = match content_length(&head.headers) {
            Ok(n) => n,
            Err(why) => return refuse(&mut io, StatusCode::BAD_REQUEST, why).await,
        };
        if length > MAX_BODY_BYTES {
            return refuse(
                &mut io,
                StatusCode::PAYLOAD_TOO_LARGE,
                "the request body is over 64 KiB",
            )
            .await;
        }
        if let Some(expect) = head.headers.get(header::EXPECT) {
            if !expect.as_bytes().eq_ignore_ascii_case(b"100-continue") {
                return refuse(
                    &mut io,
                    StatusCode::EXPECTATION_FAILED,
                    "the only expectation understood is 100-continue",
                )
                .await;
            }
            if head.version == Version::HTTP_11 && buf.len() < length {
                io.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
            }
        }
        let until = deadline.unwrap_or_else(tokio::time::Instant::now);
        while buf.len() < length {
            match tokio::time::timeout_at(until, read_more(&mut io, &mut buf)).await {
                Ok(n) => {
                    if n? == 0 {
                        return Ok(()); // the peer closed within the body
                    }
                }
                Err(_) => return refuse(&mut io, StatusCode::REQUEST_TIMEOUT, TIMED_OUT).await,
            }
        }
        let body = if length == 0 {
            Body::empty()
        } else {
            let b = Bytes::copy_from_slice(&buf[..length]);
            buf.drain(..length);
            Body::from(b)
        };
        if buf.is_empty() {
            // Nothing pipelined: a waiting request holds no buffer.
            buf = Vec::new();
        }

        let mut keep_alive = wants_keep_alive(&head);
        let (method, version) = (head.method.clone(), head.version);
        let mut request = Request::new(body);
        *request.method_mut() = head.method;
        *request.uri_mut() = head.uri;
        *request.version_mut() = head.version;
        *request.headers_mut() = head.headers;

        // The answer; the peer closing meanwhile drops it.
        let answer = app.call(request);
        tokio::pin!(answer);
        let response = loop {
            let mut probe = [0u8; 64];
            tokio::select! {
                // The answer first: one ready at once costs no read of the socket.
                biased;
                r = &mut answer => break r.unwrap_or_else(|never| match never {}),
                n = io.read(&mut probe), if buf.len() < MAX_HEAD_BYTES => match n? {
                    0 => return Ok(()),
                    n => buf.extend_from_slice(&probe[..n]),
                },
            }
        };

        let (mut parts, mut body) = response.into_parts();
        // Closing: this answer is the connection's last, and says so.
        if closing.has_changed().unwrap_or(true) {
            keep_alive = false;
        }
        if parts
            .headers
            .get(header::CONNECTION)
            .is_some_and(|v| has_token(v, "close"))
        {
            keep_alive = false;
        }
        let status = parts.status;
        let no_body = method == Method::HEAD
            || status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED;
        let exact = HttpBody::size_hint(&body).exact();
        let framing = if no_body {
            Framing::None
        } else if let Some(n) = exact {
            parts
                .headers
                .insert(header::CONTENT_LENGTH, HeaderValue::from(n));
            Framing::Length(n)
        } else if version == Version::HTTP_11 {
            parts.headers.remove(header::CONTENT_LENGTH);
            parts.headers.insert(
                header::TRANSFER_ENCODING,
                HeaderValue::from_static("chunked"),
            );
            Framing::Chunked
        } else {
            keep_alive = false;
            Framing::UntilClose
        };
        if !keep_alive {
            parts
                .headers
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        } else if version == Version::HTTP_10 {
            parts
                .headers
                .insert(header::CONNECTION, HeaderValue::from_static("keep-alive"));
        }
        if !parts.headers.contains_key(header::DATE) {
            if let Ok(v) = HeaderValue::from_str(&httpdate::fmt_http_date(SystemTime::now())) {
                parts.headers.insert(header::DATE, v);
            }
        }
        let mut out = Vec::with_capacity(256);
        write_head(&mut out, version, status, &parts.headers);
        // Boxed: its state is only there while an answer is written, not while a request waits.
        let written = Box::pin(write_body(&mut io, out, &mut body, framing)).await;
        drop(body);
        written?;
        io.flush().await?;
        if !keep_alive {
            let _ = io.shutdown().await;
            return Ok(());
        }
    }
}

/// How an answer's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    None,
    Length(u64),
    Chunked,
    UntilClose,
}

/// Reads what the peer sent into the spare room of `buf` (1 KiB made when short): the bytes read, 0
/// at the end.
async fn read_more<I: AsyncRead + Unpin>(io: &mut I, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    if buf.capacity() - buf.len() < READ_BYTES / 4 {
        buf.reserve(READ_BYTES);
    }
    io.read_buf(buf).await
}

/// A whole request head at the start of `buf` and its length; `None` while incomplete.
fn parse_head(buf: &[u8]) -> Result<Option<(Head, usize)>, (StatusCode, &'static str)> {
    let bad = |why| (StatusCode::BAD_REQUEST, why);
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut fields);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err((
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "more than 64 header fields",
            ))
        }
        Err(httparse::Error::Version) => {
            return Err((
                StatusCode::HTTP_VERSION_NOT_SUPPORTED,
                "only HTTP/1.0 and HTTP/1.1 are spoken here",
            ))
        }
        Err(_) => return Err(bad("the request head is not HTTP/1.x")),
    };
    let method = req
        .method
        .and_then(|m| Method::from_bytes(m.as_bytes()).ok())
        .ok_or(bad("the request method is not valid"))?;
    let uri = req
        .path
        .and_then(|p| p.parse::<Uri>().ok())
        .ok_or(bad("the request target is not a valid URI"))?;
    let version = match req.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let mut headers = HeaderMap::with_capacity(req.headers.len());
    for f in req.headers.iter() {
        let name = HeaderName::from_bytes(f.name.as_bytes())
            .map_err(|_| bad("a header field's name is not valid"))?;
        let value = HeaderValue::from_bytes(f.value)
            .map_err(|_| bad("a header field's value is not valid"))?;
        headers.append(name, value);
    }
    Ok(Some((
        Head {
            method,
            uri,
            version,
            headers,
        },
        len,
    )))
}

/// The request body's length: 0 without `Content-Length`; several must agree.
fn content_length(headers: &HeaderMap) -> Result<usize, &'static str> {
    let mut length = None;
    for v in headers.get_all(header::CONTENT_LENGTH) {
        let n = std::str::from_utf8(v.as_bytes())
            .ok()
            .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse::<usize>().ok())
            .ok_or("the Content-Length is not a number")?;
        if length.is_some_and(|l| l != n) {
            return Err("the request has two different Content-Lengths");
        }
        length = Some(n);
    }
    Ok(length.unwrap_or(0))
}

/// Whether `value`, a comma-separated list, has `token` (case-insensitive).
fn has_token(value: &HeaderValue, token: &str) -> bool {
    value
        .as_bytes()
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// HTTP/1.1 keeps the connection unless asked to close; 1.0 closes unless asked to keep it.
fn wants_keep_alive(head: &Head) -> bool {
    let asked = |token| {
        head.headers
            .get_all(header::CONNECTION)
            .iter()
            .any(|v| has_token(v, token))
    };
    match head.version {
        Version::HTTP_10 => asked("keep-alive"),
        _ => !asked("close"),
    }
}

/// The status line in the request's version (as hyper answers), then the fields.
fn write_head(out: &mut Vec<u8>, version: Version, status: StatusCode, headers: &HeaderMap) {
    out.extend_from_slice(if version == Version::HTTP_10 {
        b"HTTP/1.0 "
    } else {
        b"HTTP/1.1 "
    });
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Writes `head` and then the body, framed: a first piece of the body goes in the head's write
/// (all of a small body).
async fn write_body<I: AsyncWrite + Unpin>(
    io: &mut I,
    head: Vec<u8>,
    body: &mut Body,
    framing: Framing,
) -> Result<(), ConnError> {
    let mut pending = Some(head);
    let mut sent = 0u64;
    if framing != Framing::None {
        while let Some(frame) = body.frame().await {
            let data = match frame.map_err(ConnError::Body)?.into_data() {
                Ok(d) if !d.is_empty() => d,
                _ => continue, // trailers and empty frames: nothing to send
            };
            sent += data.len() as u64;
            if matches!(framing, Framing::Length(n) if sent > n) {
                return Err(ConnError::BodyLength);
            }
            let mut out = pending.take().unwrap_or_default();
            if framing == Framing::Chunked {
                out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
                out.extend_from_slice(&data);
                out.extend_from_slice(b"\r\n");
                io.write_all(&out).await?;
            } else if out.len() + data.len() <= WITH_HEAD_BYTES {
                out.extend_from_slice(&data);
                io.write_all(&out).await?;
            } else {
                io.write_all(&out).await?;
                io.write_all(&data).await?;
            }
        }
    }
    let mut out = pending.unwrap_or_default();
    match framing {
        Framing::Chunked => out.extend_from_slice(b"0\r\n\r\n"),
        Framing::Length(n) if sent != n => return Err(ConnError::BodyLength),
        _ => {}
    }
    if !out.is_empty() {
        io.write_all(&out).await?;
    }
    Ok(())
}

/// Answers `status` with `why` and closes.
async fn refuse<I: AsyncWrite + Unpin>(
    io: &mut I,
    status: StatusCode,
    why: &'static str,
) -> Result<(), ConnError> {
    let body = format!("{why}\n");
    let head = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        status.as_str(),
        status.canonical_reason().unwrap_or(""),
        body.len()
    );
    let _ = io.write_all(format!("{head}{body}").as_bytes()).await;
    let _ = io.shutdown().await;
    Err(ConnError::Refused { status, why })
}

#[cfg(test)]
mod tests {
    use std::sync::{
        atomic::{AtomicBool, Ordering::SeqCst},
        Arc,
    };

    use axum::routing::{get, post};
    use tokio::{
        io::{duplex, DuplexStream},
        sync::Notify,
        task::JoinHandle,
    };

    use super::*;

    /// Sets a flag when the handler holding it is dropped.
    struct Guard(Arc<AtomicBool>);
    impl Drop for Guard {
        fn drop(&mut self) {
            self.0.store(true, SeqCst);
        }
    }

    fn app(dropped: Arc<AtomicBool>, entered: Arc<Notify>, go: Arc<Notify>) -> Router {
        Router::new()
            .route("/hello", get(|| async { "hi" }))
            .route("/echo", post(|body: Bytes| async move { body }))
            .route(
                "/stream",
                get(|| async {
                    Body::from_stream(futures_util::stream::iter(
                        ["a", "bb", "ccc"]
                            .map(|s| Ok::<_, std::convert::Infallible>(Bytes::from(s))),
                    ))
                }),
            )
            .route(
                "/wait",
                get(move || async move {
                    let _g = Guard(dropped);
                    entered.notify_one();
                    go.notified().await;
                    "done"
                }),
            )
    }

    struct Conn {
        client: DuplexStream,
        close: watch::Sender<()>,
        task: JoinHandle<Result<(), ConnError>>,
        dropped: Arc<AtomicBool>,
        entered: Arc<Notify>,
        go: Arc<Notify>,
        read: Vec<u8>,
    }

    fn start() -> Conn {
        let (client, server) = duplex(1 << 16);
        let (close, rx) = watch::channel(());
        let dropped = Arc::new(AtomicBool::new(false));
        let (entered, go) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
        let task = tokio::spawn(serve_connection(
            server,
            app(dropped.clone(), entered.clone(), go.clone()),
            rx,
        ));
        Conn {
            client,
            close,
            task,
            dropped,
            entered,
            go,
            read: Vec::new(),
        }
    }

    /// One answer as the client reads it.
    #[derive(Debug)]
    struct Answer {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    }

    impl Answer {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }
    }

    impl Conn {
        async fn send(&mut self, bytes: &[u8]) {
            self.client.write_all(bytes).await.unwrap();
        }

        /// Reads until `f` finds what it needs in the bytes read so far.
        async fn read_until<T>(&mut self, mut f: impl FnMut(&[u8]) -> Option<(T, usize)>) -> T {
            loop {
                if let Some((t, used)) = f(&self.read) {
                    self.read.drain(..used);
                    return t;
                }
                let mut b = [0u8; 4096];
                let n = self.client.read(&mut b).await.unwrap();
                assert!(
                    n > 0,
                    "the server closed before a whole answer: {:?}",
                    String::from_utf8_lossy(&self.read)
                );
                self.read.extend_from_slice(&b[..n]);
            }
        }

        /// Reads one answer: by its Content-Length, chunked, or (neither) until the end.
        async fn answer(&mut self) -> Answer {
            let (status, headers) = self
                .read_until(|b| {
                    let mut h = [httparse::EMPTY_HEADER; 32];
                    let mut r = httparse::Response::new(&mut h);
                    match r.parse(b).unwrap() {
                        httparse::Status::Complete(n) => Some((
                            (
                                r.code.unwrap(),
                                r.headers
                                    .iter()
                                    .map(|h| {
                                        (
                                            h.name.to_string(),
                                            String::from_utf8_lossy(h.value).into_owned(),
                                        )
                                    })
                                    .collect::<Vec<_>>(),
                            ),
                            n,
                        )),
                        httparse::Status::Partial => None,
                    }
                })
                .await;
            let mut a = Answer {
                status,
                headers,
                body: Vec::new(),
            };
            if let Some(n) = a.header("content-length") {
                let n: usize = n.parse().unwrap();
                a.body = self
                    .read_until(|b| (b.len() >= n).then(|| (b[..n].to_vec(), n)))
                    .await;
            } else if a.header("transfer-encoding") == Some("chunked") {
                loop {
                    let chunk = self
                        .read_until(|b| {
                            let line = b.windows(2).position(|w| w == b"\r\n")?;
                            let n =
                                usize::from_str_radix(std::str::from_utf8(&b[..line]).unwrap(), 16)
                                    .unwrap();
                            let end = line + 2 + n + 2;
                            (b.len() >= end).then(|| (b[line + 2..line + 2 + n].to_vec(), end))
                        })
                        .await;
                    if chunk.is_empty() {
                        break;
                    }
                    a.body.extend_from_slice(&chunk);
                }
            } else if a.status != 100 {
                self.client.read_to_end(&mut self.read).await.unwrap();
                a.body = std::mem::take(&mut self.read);
            }
            a
        }

        /// Whether the server closed the connection (with nothing more to read).
        async fn closed(&mut self) -> bool {
            let mut b = [0u8; 16];
            matches!(self.client.read(&mut b).await, Ok(0))
        }
    }

    #[tokio::test]
    async fn keep_alive_and_pipelined_requests_are_answered_in_order() {
        let mut c = start();
        for _ in 0..2 {
            c.send(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n").await;
            let a = c.answer().await;
            assert_eq!((a.status, a.body.as_slice()), (200, &b"hi"[..]));
            assert_eq!(a.header("content-length"), Some("2"));
            assert!(a.header("date").is_some(), "{a:?}");
            assert_eq!(a.header("connection"), None);
        }
        c.send(b"GET /hello HTTP/1.1\r\n\r\nGET /nothing HTTP/1.1\r\n\r\nGET /hello HTTP/1.1\r\nConnection: close\r\n\r\n")
            .await;
        assert_eq!(c.answer().await.status, 200);
        assert_eq!(c.answer().await.status, 404);
        let last = c.answer().await;
        assert_eq!(
            (last.status, last.header("connection")),
            (200, Some("close"))
        );
        assert!(c.closed().await);
        c.task.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_head_written_a_byte_at_a_time_is_answered() {
        let mut c = start();
        for b in b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n" {
            c.send(&[*b]).await;
            tokio::task::yield_now().await;
        }
        let a = c.answer().await;
        assert_eq!((a.status, a.body.as_slice()), (200, &b"hi"[..]));
    }

    #[tokio::test]
    async fn a_body_reaches_the_handler_after_100_continue() {
        let mut c = start();
        c.send(b"POST /echo HTTP/1.1\r\nContent-Length: 11\r\nExpect: 100-continue\r\n\r\n")
            .await;
        assert_eq!(c.answer().await.status, 100);
        c.send(b"hello").await;
        c.send(b" world").await;
        let a = c.answer().await;
        assert_eq!((a.status, a.body.as_slice()), (200, &b"hello world"[..]));
        // Without the expectation, a body sent with its head.
        c.send(b"POST /echo HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc")
            .await;
        assert_eq!(c.answer().await.body, b"abc");
    }

    #[tokio::test]
    async fn a_streamed_body_is_chunked_to_1_1_and_ends_the_connection_for_1_0() {
        let mut c = start();
        c.send(b"GET /stream HTTP/1.1\r\n\r\n").await;
        let a = c.answer().await;
        assert_eq!(a.header("transfer-encoding"), Some("chunked"));
        assert_eq!(a.body, b"abbccc");
        // Still open after a chunked answer.
        c.send(b"GET /hello HTTP/1.1\r\n\r\n").await;
        assert_eq!(c.answer().await.body, b"hi");

        let mut c = start();
        c.send(b"GET /stream HTTP/1.0\r\n\r\n").await;
        assert!(
            c.read_until(|b| (b.len() >= 9).then(|| (b.starts_with(b"HTTP/1.0 "), 0)))
                .await
        );
        let a = c.answer().await;
        assert_eq!(
            (a.header("transfer-encoding"), a.header("connection")),
            (None, Some("close"))
        );
        assert_eq!(a.body, b"abbccc");
        c.task.await.unwrap().unwrap();

        // HTTP/1.0 with keep-alive asked for, and a body of known length: kept.
        let mut c = start();
        c.send(b"GET /hello HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            .await;
        let a = c.answer().await;
        assert_eq!(
            (a.body.as_slice(), a.header("connection")),
            (&b"hi"[..], Some("keep-alive"))
        );
        c.send(b"GET /hello HTTP/1.0\r\n\r\n").await;
        let a = c.answer().await;
        assert_eq!(
            (a.body.as_slice(), a.header("connection")),
            (&b"hi"[..], Some("close"))
        );
        assert!(c.closed().await);
    }

    #[tokio::test]
    async fn a_head_request_gets_no_body() {
        let mut c = start();
        c.send(b"HEAD /hello HTTP/1.1\r\n\r\nGET /hello HTTP/1.1\r\n\r\n")
            .await;
        let head = c
            .read_until(|b| {
                let end = b.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
                Some((b[..end].to_vec(), end))
            })
            .await;
        assert!(
            head.starts_with(b"HTTP/1.1 200 OK\r\n"),
            "{}",
            String::from_utf8_lossy(&head)
        );
        // The next bytes are the next answer's, not a body.
        let a = c.answer().await;
        assert_eq!((a.status, a.body.as_slice()), (200, &b"hi"[..]));
    }

    #[tokio::test]
    async fn bad_requests_get_their_status_and_reason_then_the_connection_closes() {
        let long = format!(
            "GET /hello HTTP/1.1\r\nX: {}\r\n\r\n",
            "a".repeat(MAX_HEAD_BYTES)
        );
        let many: String = (0..=MAX_HEADERS).map(|i| format!("X-{i}: 1\r\n")).collect();
        let many = format!("GET /hello HTTP/1.1\r\n{many}\r\n");
        let cases: [(&[u8], u16, &str); 8] = [
            (b"\x16\x03\x01 garbage\r\n\r\n", 400, "not HTTP/1.x"),
            (long.as_bytes(), 431, "over 16 KiB"),
            (many.as_bytes(), 431, "more than 64"),
            (
                b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
                411,
                "Content-Length",
            ),
            (
                b"POST /echo HTTP/1.1\r\nContent-Length: 65537\r\n\r\n",
                413,
                "over 64 KiB",
            ),
            (
                b"POST /echo HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
                400,
                "two different",
            ),
            (
                b"POST /echo HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
                400,
                "not a number",
            ),
            (
                b"GET /hello HTTP/1.1\r\nExpect: something\r\n\r\n",
                417,
                "100-continue",
            ),
        ];
        for (request, status, why) in cases {
            let mut c = start();
            c.send(request).await;
            let a = c.answer().await;
            let body = String::from_utf8_lossy(&a.body);
            assert_eq!(a.status, status, "{body}");
            assert!(body.contains(why), "{status}: {body}");
            assert_eq!(a.header("connection"), Some("close"));
            assert!(c.closed().await);
            assert!(matches!(
                c.task.await.unwrap(),
                Err(ConnError::Refused { .. })
            ));
        }
    }

    #[tokio::test]
    async fn a_peer_that_goes_takes_its_waiting_answer_with_it() {
        let mut c = start();
        c.send(b"GET /wait HTTP/1.1\r\n\r\n").await;
        // The handler runs, then the client goes.
        c.entered.notified().await;
        assert!(!c.dropped.load(SeqCst));
        drop(c.client);
        c.task.await.unwrap().unwrap();
        assert!(c.dropped.load(SeqCst), "the handler was not dropped");
    }

    #[tokio::test]
    async fn closing_ends_an_idle_connection_and_lets_an_answer_finish() {
        let mut idle = start();
        idle.send(b"GET /hello HTTP/1.1\r\n\r\n").await;
        assert_eq!(idle.answer().await.status, 200);
        idle.close.send(()).unwrap();
        assert!(idle.closed().await);
        idle.task.await.unwrap().unwrap();

        let mut busy = start();
        busy.send(b"GET /wait HTTP/1.1\r\n\r\n").await;
        busy.entered.notified().await;
        busy.close.send(()).unwrap();
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(
            !busy.task.is_finished(),
            "closed with an answer in progress"
        );
        busy.go.notify_one();
        let a = busy.answer().await;
        assert_eq!(
            (a.body.as_slice(), a.header("connection")),
            (&b"done"[..], Some("close"))
        );
        assert!(busy.closed().await);
        busy.task.await.unwrap().unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_that_does_not_arrive_in_30_s_gets_408_and_an_idle_connection_waits() {
        // Idle for a minute: still served.
        let mut c = start();
        tokio::time::sleep(std::time::Duration::from_secs(60)).await;
        c.send(b"GET /hello HTTP/1.1\r\n\r\n").await;
        assert_eq!(c.answer().await.status, 200);
        // A head that stops halfway.
        let t0 = tokio::time::Instant::now();
        c.send(b"GET /hello HTTP/1.1\r\nHost:").await;
        let a = c.answer().await;
        assert_eq!(a.status, 408, "{a:?}");
        assert!(String::from_utf8_lossy(&a.body).contains("over 30 s"));
        assert_eq!(t0.elapsed(), REQUEST_READ_TIMEOUT);
        assert!(c.closed().await);
        // A body that stops halfway, after a head that came slowly but in time.
        let mut c = start();
        let t0 = tokio::time::Instant::now();
        c.send(b"POST /echo HTTP/1.1\r\n").await;
        tokio::time::sleep(std::time::Duration::from_secs(20)).await;
        c.send(b"Content-Length: 4\r\n\r\nab").await;
        let a = c.answer().await;
        assert_eq!(a.status, 408, "{a:?}");
        assert_eq!(t0.elapsed(), REQUEST_READ_TIMEOUT);
    }

    /// Pieces of requests, good and bad, for the proptest below.
    const PIECES: &[&[u8]] = &[
        b"GET /hello HTTP/1.1\r\n",
        b"POST /echo HTTP/1.1\r\n",
        b"GET /stream HTTP/1.0\r\n",
        b"HEAD /stream HTTP/1.1\r\n",
        b"GET /wait HTTP/1.1\r\n", // waits until its client goes
        b"Content-Length: 3\r\n",
        b"Content-Length: 99999999999999999999\r\n",
        b"Transfer-Encoding: chunked\r\n",
        b"Connection: close\r\n",
        b"Expect: 100-continue\r\n",
        b"\r\n",
        b"abc",
    ];

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(200))]

        /// Whatever a client sends, in whatever pieces, and then closes: the connection
        /// answers with HTTP/1.x answers or closes, never panics, and ends.
        #[test]
        fn any_bytes_get_answers_or_a_close_and_the_connection_ends(
            pieces in proptest::collection::vec(proptest::prop_oneof![
                12 => proptest::strategy::Strategy::prop_map(proptest::sample::select(PIECES), <[u8]>::to_vec),
                1 => proptest::collection::vec(proptest::num::u8::ANY, 0..40),
            ], 0..24),
            split in 1usize..64,
        ) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let mut c = start();
                for part in pieces.concat().chunks(split) {
                    if c.client.write_all(part).await.is_err() {
                        break;
                    }
                }
                let _ = c.client.shutdown().await;
                let mut out = Vec::new();
                let wait = std::time::Duration::from_secs(5);
                let _ = tokio::time::timeout(wait, c.client.read_to_end(&mut out))
                    .await
                    .expect("the connection neither answered nor closed in 5 s");
                let ended = tokio::time::timeout(wait, c.task).await;
                assert!(matches!(ended, Ok(Ok(_))), "the connection did not end, or panicked");
                assert!(
                    out.is_empty() || out.starts_with(b"HTTP/1."),
                    "{}",
                    String::from_utf8_lossy(&out)
                );
            });
        }
    }

    /// What a connection's task holds besides its request and its handler's future (boxed by
    /// the router): 1,496 bytes in a debug build (2026-12-07), against hyper's two 8 KiB
    /// buffers. A buffer added to the future's state fails this.
    #[test]
    fn a_connection_future_is_small() {
        let (_client, server) = duplex(64);
        let (_close, rx) = watch::channel(());
        let fut = serve_connection(server, Router::new(), rx);
        let size = std::mem::size_of_val(&fut);
        assert!(size <= 2048, "{size} bytes");
    }
}
