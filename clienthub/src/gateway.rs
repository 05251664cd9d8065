//! The HTTP gateway for players and browsers: `GET` and `HEAD` of
//! `/objects/{id}` and `/files/{path...}` (the object's name in the
//! channel), whole or one byte range (`Range`: 206, or 416 past the end),
//! with `Accept-Ranges`, `ETag` (the object id; `If-None-Match` it: 304),
//! and the catalog's `Content-Type` and `Last-Modified` (its published time)
//! where the catalog lists the object, else a type from the name. The bytes come from the store worker a chunk at a time, each
//! checked against its hash as it is read, so nothing is served that the
//! broadcaster did not sign. An object still arriving is served too: a
//! chunk not held yet is waited for (bounded), so a player can start before
//! the transfer ends.
//!
//! What changes the hub needs its token (`crate::token`): `POST
//! /api/fetch|pin|unpin/{id or path}`, and a `GET` that would start a fetch
//! (of an object evicted, or not yet held). Without it: 401, and nothing
//! changes; a player without it is served what the hub holds.

use crate::status::{ObjectStatus, StatusBoard};
use crate::store_worker::{Ask, StoreJob};
use crate::token::Token;
use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use hubcast_protocol::ObjectId;
use std::ops::RangeInclusive;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// What the gateway reads through.
#[derive(Clone)]
pub struct Gateway {
    pub status: StatusBoard,
    pub store: mpsc::Sender<StoreJob>,
    /// What a request that changes the hub must carry.
    pub token: Token,
}

/// What a `Range` header asks of an object of `size` bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum Wanted {
    /// No range, or one the gateway ignores (several ranges, or a header
    /// that does not parse: RFC 9110 lets a server answer with the whole).
    Whole,
    /// One satisfiable range, inclusive.
    Part(RangeInclusive<u64>),
    /// A range that starts at or past the end, or asks for no bytes: 416.
    Unsatisfiable,
}

/// Read a `Range` header value against an object of `size` bytes. Only
/// `bytes=` with a single range counts; nothing here allocates.
pub fn wanted(range: Option<&str>, size: u64) -> Wanted {
    let Some(spec) = range.and_then(|r| r.trim().strip_prefix("bytes=")) else { return Wanted::Whole };
    if spec.contains(',') {
        return Wanted::Whole;
    }
    let Some((first, last)) = spec.trim().split_once('-') else { return Wanted::Whole };
    let number =
        |s: &str| (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse::<u64>().ok())?;
    match (first, last) {
        // bytes=-N: the last N bytes.
        ("", n) => match number(n) {
            Some(0) => Wanted::Unsatisfiable,
            Some(_) if size == 0 => Wanted::Unsatisfiable,
            Some(n) => Wanted::Part(size.saturating_sub(n)..=size - 1),
            None => Wanted::Whole,
        },
        (a, "") => match number(a) {
            Some(a) if a >= size => Wanted::Unsatisfiable,
            Some(a) => Wanted::Part(a..=size - 1),
            None => Wanted::Whole,
        },
        (a, b) => match (number(a), number(b)) {
            (Some(a), Some(b)) if a > b => Wanted::Whole,
            (Some(a), Some(_)) if a >= size => Wanted::Unsatisfiable,
            (Some(a), Some(b)) => Wanted::Part(a..=b.min(size - 1)),
            _ => Wanted::Whole,
        },
    }
}

/// `GET`/`HEAD /objects/{id}`.
pub async fn object(gw: &Gateway, method: &Method, headers: &HeaderMap, id: &str) -> Response {
    let Some(id) = ObjectId::from_hex(id) else {
        return refuse(StatusCode::NOT_FOUND, "an object id is 64 hex digits");
    };
    match gw.status.object(&id) {
        Some(o) => serve(gw, method, headers, id, o).await,
        None => refuse(StatusCode::NOT_FOUND, "no such object on this channel"),
    }
}

/// `GET`/`HEAD /files/{path...}`: the object of that name.
pub async fn file(gw: &Gateway, method: &Method, headers: &HeaderMap, path: &str) -> Response {
    if crate::store::safe_relative_path(path).is_none() {
        return refuse(StatusCode::BAD_REQUEST, "a path in the channel: relative, no `..`, no NUL");
    }
    match gw.status.object_named(path) {
        Some((id, o)) => serve(gw, method, headers, id, o).await,
        None => refuse(StatusCode::NOT_FOUND, "no such file on this channel"),
    }
}

/// `POST /api/fetch|pin|unpin/{what}`: `what` an object id or a name in
/// the channel. 401 without the token (nothing changes), 404 for an object
/// the hub has not heard of, else 202: the store worker records the ask
/// and the hub acts on it (the status shows it).
pub async fn ask(gw: &Gateway, headers: &HeaderMap, ask: Ask, what: &str) -> Response {
    if !admitted(gw, headers) {
        return unauthorized();
    }
    let found = match ObjectId::from_hex(what) {
        Some(id) => gw.status.object(&id).map(|o| (id, o)),
        None if crate::store::safe_relative_path(what).is_none() => {
            return refuse(StatusCode::BAD_REQUEST, "a path in the channel: relative, no `..`, no NUL");
        }
        None => gw.status.object_named(what),
    };
    let Some((id, o)) = found else { return refuse(StatusCode::NOT_FOUND, "no such object on this channel") };
    if gw.store.send(StoreJob::Ask(id, ask)).await.is_err() {
        return refuse(StatusCode::SERVICE_UNAVAILABLE, "the hub is stopping");
    }
    let body =
        serde_json::json!({ "id": id.to_hex(), "name": o.name, "asked": format!("{ask:?}").to_lowercase() });
    (StatusCode::ACCEPTED, axum::Json(body)).into_response()
}

/// `GET /api/catalog`'s parameters, as they come: each is checked here.
#[derive(Debug, Default, serde::Deserialize)]
pub struct CatalogParams {
    pub q: Option<String>,
    pub tag: Option<String>,
    pub held: Option<String>,
    pub cursor: Option<String>,
    pub limit: Option<String>,
}

/// `GET /api/catalog?q=&tag=&held=&cursor=&limit=`: the channel's catalog,
/// a page at a time (`limit`, default 50, at most 500; `next` is the
/// cursor of the page after), each entry with whether this hub holds it.
pub async fn catalog(gw: &Gateway, p: CatalogParams) -> Response {
    let held = match p.held.as_deref() {
        None | Some("") => None,
        Some("true" | "1" | "yes") => Some(true),
        Some("false" | "0" | "no") => Some(false),
        Some(_) => return refuse(StatusCode::BAD_REQUEST, "held: true or false"),
    };
    let limit = match p.limit.as_deref().map(str::parse::<usize>) {
        None => 50,
        Some(Ok(n)) if (1..=crate::library::MAX_LIMIT).contains(&n) => n,
        Some(_) => return refuse(StatusCode::BAD_REQUEST, "limit: 1 to 500"),
    };
    let bounded = |s: Option<String>| s.filter(|s| !s.is_empty() && s.len() <= 1000);
    let query = crate::library::Query {
        q: bounded(p.q),
        tag: bounded(p.tag),
        held,
        cursor: bounded(p.cursor),
        limit,
    };
    let (tx, rx) = oneshot::channel();
    if gw.store.send(StoreJob::Catalog(query, tx)).await.is_err() {
        return refuse(StatusCode::SERVICE_UNAVAILABLE, "the hub is stopping");
    }
    match rx.await {
        Ok(Ok(found)) => axum::Json(found).into_response(),
        Ok(Err(e)) => (StatusCode::INTERNAL_SERVER_ERROR, format!("the store: {e}\n")).into_response(),
        Err(_) => refuse(StatusCode::SERVICE_UNAVAILABLE, "the hub is stopping"),
    }
}

fn admitted(gw: &Gateway, headers: &HeaderMap) -> bool {
    gw.token.admits(headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()))
}

fn unauthorized() -> Response {
    let why = "this changes the hub: send `Authorization: Bearer TOKEN`, the token in the hub's store \
               (api-token, readable by the hub's user); `clienthub get/pin/unpin` send it\n";
    (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, "Bearer")], why).into_response()
}

fn refuse(code: StatusCode, why: &'static str) -> Response {
    (code, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], format!("{why}\n")).into_response()
}

async fn serve(
    gw: &Gateway,
    method: &Method,
    headers: &HeaderMap,
    id: ObjectId,
    o: ObjectStatus,
) -> Response {
    // A reader with the token asks for what the hub lacks, and is served
    // as it arrives; one without is served what the hub holds.
    let asked = !o.complete && method != Method::HEAD && admitted(gw, headers);
    if asked && gw.store.send(StoreJob::Ask(id, Ask::Fetch)).await.is_err() {
        return refuse(StatusCode::SERVICE_UNAVAILABLE, "the hub is stopping");
    }
    if o.evicted && !asked {
        return not_yet(
            "evicted to stay within --quota; `clienthub get` fetches it again (a GET with the hub's token)",
            &o,
        );
    }
    if o.chunk_size == 0 && o.size > 0 {
        return not_yet("the hub has not heard this object's manifest yet", &o);
    }
    let etag = format!("\"{}\"", id.to_hex());
    if headers.get(header::IF_NONE_MATCH).is_some_and(|v| v.as_bytes() == etag.as_bytes() || v == "*") {
        return Response::builder()
            .status(StatusCode::NOT_MODIFIED)
            .header(header::ETAG, etag)
            .body(Body::empty())
            .unwrap_or_else(|_| refuse(StatusCode::INTERNAL_SERVER_ERROR, "bad response"));
    }
    // The catalog's entry, if it lists this very object (not an older
    // version of the file under the same name).
    let entry = catalog_entry(&gw.store, &o.name).await.filter(|e| e.id == id);
    let range = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let (code, span) = match wanted(range, o.size) {
        Wanted::Whole => (StatusCode::OK, (o.size > 0).then(|| 0..=o.size - 1)),
        Wanted::Part(r) => (StatusCode::PARTIAL_CONTENT, Some(r)),
        Wanted::Unsatisfiable => {
            let mut r = refuse(StatusCode::RANGE_NOT_SATISFIABLE, "the range is past the end");
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{}", o.size)) {
                r.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return r;
        }
    };
    let chunk_size = u64::from(o.chunk_size);
    // The first chunk is read (or waited for) before the answer starts: an
    // object whose bytes do not come is a 503, not a body cut short.
    let body = match span.clone() {
        Some(r) if method != Method::HEAD => {
            let index = r.start() / chunk_size;
            match read_chunk(&gw.store, id, index).await {
                Some(first) => Body::from_stream(chunks(gw.store.clone(), id, chunk_size, r, (index, first))),
                None => return not_yet("waited for its first bytes in vain", &o),
            }
        }
        _ => Body::empty(),
    };
    let len = span.as_ref().map_or(0, |r| r.end() - r.start() + 1);
    let mut response = Response::builder()
        .status(code)
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::CONTENT_LENGTH, len)
        .header(header::ETAG, etag);
    response = match &entry {
        Some(e) => response.header(header::CONTENT_TYPE, e.content_type.as_str()),
        None => response.header(header::CONTENT_TYPE, hubcast_daemon::content_type(&o.name)),
    };
    if let Some(e) = entry.filter(|e| e.published > 0) {
        let at = std::time::UNIX_EPOCH + Duration::from_secs(e.published);
        response = response.header(header::LAST_MODIFIED, httpdate::fmt_http_date(at));
    }
    if let (StatusCode::PARTIAL_CONTENT, Some(r)) = (code, &span) {
        response =
            response.header(header::CONTENT_RANGE, format!("bytes {}-{}/{}", r.start(), r.end(), o.size));
    }
    response.body(body).unwrap_or_else(|_| refuse(StatusCode::INTERNAL_SERVER_ERROR, "bad response"))
}

fn not_yet(why: &str, o: &ObjectStatus) -> Response {
    let body = format!("not held yet ({why}): {:.0}% stored\n", o.percent);
    (StatusCode::SERVICE_UNAVAILABLE, [(header::RETRY_AFTER, "5")], body).into_response()
}

/// The catalog's entry named `name` (`None`: no catalog, not listed, or the
/// hub is stopping).
async fn catalog_entry(
    store: &mpsc::Sender<StoreJob>,
    name: &str,
) -> Option<hubcast_protocol::catalog::Entry> {
    let (tx, rx) = oneshot::channel();
    store.send(StoreJob::Entry(name.to_owned(), tx)).await.ok()?;
    rx.await.ok()?
}

/// How long a read waits for a chunk the hub does not hold yet (the
/// carousel, peers or the origin bring it), and how often it asks again.
const WAIT_FOR_CHUNK: Duration = Duration::from_secs(30);
const WAIT_STEP: Duration = Duration::from_millis(20);

/// A stored chunk, checked, from the store worker; one not there yet is
/// waited for, up to [`WAIT_FOR_CHUNK`].
async fn read_chunk(store: &mpsc::Sender<StoreJob>, id: ObjectId, index: u64) -> Option<Vec<u8>> {
    let index = u32::try_from(index).ok()?;
    let until = tokio::time::Instant::now() + WAIT_FOR_CHUNK;
    loop {
        let (tx, rx) = oneshot::channel();
        store.send(StoreJob::ReadChunk(id, index, tx)).await.ok()?;
        if let Some(data) = rx.await.ok()? {
            return Some(data);
        }
        if tokio::time::Instant::now() + WAIT_STEP > until {
            return None;
        }
        tokio::time::sleep(WAIT_STEP).await;
    }
}

/// The bytes of `range`, a chunk at a time from the store worker, from the
/// `first` chunk already read. A chunk that does not come within the wait
/// (or is found damaged as it is read, and not brought again) ends the
/// body with an error: the client sees it cut short, never wrong bytes.
fn chunks(
    store: mpsc::Sender<StoreJob>,
    id: ObjectId,
    chunk_size: u64,
    range: RangeInclusive<u64>,
    first: (u64, Vec<u8>),
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> {
    let (start, last) = (*range.start(), *range.end());
    futures_util::stream::try_unfold((start, Some(first)), move |(at, read)| {
        let store = store.clone();
        async move {
            if at > last {
                return Ok(None);
            }
            let index = at / chunk_size;
            let gone = || std::io::Error::other(format!("chunk {index} of {id} did not come"));
            let data = match read {
                Some((i, data)) if i == index => data,
                _ => read_chunk(&store, id, index).await.ok_or_else(gone)?,
            };
            let base = index * chunk_size;
            let (from, to) = ((at - base) as usize, ((last - base) as usize + 1).min(data.len()));
            let piece = data.get(from..to).filter(|p| !p.is_empty()).ok_or_else(gone)?;
            let next = at + piece.len() as u64;
            Ok(Some((Bytes::copy_from_slice(piece), (next, None))))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_read_as_rfc_9110_says_and_hostile_ones_get_a_clean_answer() {
        let part = |r: RangeInclusive<u64>| Wanted::Part(r);
        assert_eq!(wanted(None, 10), Wanted::Whole);
        assert_eq!(wanted(Some("bytes=0-0"), 10), part(0..=0));
        assert_eq!(wanted(Some("bytes=-1"), 10), part(9..=9));
        assert_eq!(wanted(Some("bytes=-100"), 10), part(0..=9));
        assert_eq!(wanted(Some("bytes=3-"), 10), part(3..=9));
        assert_eq!(wanted(Some("bytes=3-1000"), 10), part(3..=9));
        assert_eq!(wanted(Some("bytes=10-"), 10), Wanted::Unsatisfiable);
        assert_eq!(wanted(Some("bytes=10-20"), 10), Wanted::Unsatisfiable);
        assert_eq!(wanted(Some("bytes=-0"), 10), Wanted::Unsatisfiable);
        assert_eq!(wanted(Some("bytes=0-0"), 0), Wanted::Unsatisfiable);
        assert_eq!(wanted(Some("bytes=-5"), 0), Wanted::Unsatisfiable);
        // Ignored: the whole is the answer.
        for odd in
            ["bytes=5-3", "bytes=a-b", "bytes=-", "bytes=1", "items=0-1", "bytes=+1-2", "bytes=0-1,3-4"]
        {
            assert_eq!(wanted(Some(odd), 10), Wanted::Whole, "{odd}");
        }
        let many = format!("bytes={}", vec!["0-0"; 10_000].join(","));
        assert_eq!(wanted(Some(&many), 10), Wanted::Whole);
        let huge = format!("bytes={}-", "9".repeat(40));
        assert_eq!(wanted(Some(&huge), 10), Wanted::Whole, "a number past u64 does not parse");
    }
}
