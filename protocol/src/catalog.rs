//! The channel's catalog: everything the broadcaster offers, with its
//! metadata, signed and paged so that a channel of a million objects fits.
//!
//! - The **root** is a signed datagram (kind 6, `wire::CatalogRoot`): the
//!   catalog's version (it only rises: a hub refuses an older or equal one),
//!   how many entries and pages, and the object id of its index.
//! - The **index** and the **pages** are objects of the channel like any
//!   file, named under [`CATALOG_PREFIX`] and sent on the carousel, repaired
//!   by peers and the origin, and checked as every archive object is (the
//!   id binds the name and the content's BLAKE3). The index lists each
//!   page's object id; a page holds up to [`MAX_PAGE_ENTRIES`] entries.
//!
//! So what a hub trusts of the catalog is what the root's signature binds:
//! the index by its id, the pages by the ids the index lists. The decoders
//! here read only bytes that chain to a verified root, and still take
//! every length and count from the input as hostile: bounded, checked
//! against what is left, nothing allocated before it is checked.
//!
//! ```text
//! page:  "HCP1" | entry count n (u32) | n × entry
//! entry: object id (32) | size (u64) | published, unix s (u64) | flags (u8: bit 0 on-demand)
//!        | name (u16 len, UTF-8, a relative path) | content type (u8 len, ASCII)
//!        | title (u16 len, UTF-8) | description (u16 len, UTF-8)
//!        | tag count (u8) | tag count × tag (u8 len, UTF-8)
//! index: "HCI1" | page count p (u32) | p × (page object id (32), entries in it (u32))
//! ```
//! All integers big-endian. docs/PROTOCOL.md has the same, with the limits.

use crate::ObjectId;

/// Names of the catalog's own objects start with this; a seeded path may not.
pub const CATALOG_PREFIX: &str = ".hubcast/catalog/";
pub const PAGE_MAGIC: [u8; 4] = *b"HCP1";
pub const INDEX_MAGIC: [u8; 4] = *b"HCI1";
/// Entries in one page, at most.
pub const MAX_PAGE_ENTRIES: usize = 4096;
/// A page's bytes, at most (one chunk of the default size).
pub const MAX_PAGE_BYTES: usize = 1 << 20;
/// Pages in one catalog, at most: 268 million entries.
pub const MAX_PAGES: usize = 65_536;
/// An index's bytes, at most.
pub const MAX_INDEX_BYTES: usize = 8 + MAX_PAGES * INDEX_ROW;
const INDEX_ROW: usize = 32 + 4;
pub const MAX_CONTENT_TYPE_LEN: usize = 127;
pub const MAX_TITLE_LEN: usize = 300;
pub const MAX_DESCRIPTION_LEN: usize = 4000;
pub const MAX_TAGS: usize = 16;
pub const MAX_TAG_LEN: usize = 64;

/// One object the channel offers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub id: ObjectId,
    /// Its name in the channel (the manifest's), a relative path.
    pub name: String,
    pub size: u64,
    /// When the broadcaster first offered it, unix seconds.
    pub published: u64,
    /// Announced only: sent when a hub asks, not on the carousel.
    pub on_demand: bool,
    /// A media type, e.g. `video/mp4`.
    pub content_type: String,
    pub title: String,
    pub description: String,
    pub tags: Vec<String>,
}

/// Why catalog bytes were refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CatalogError {
    #[error("catalog bytes end early")]
    Truncated,
    #[error("catalog bytes run past their limit")]
    Oversized,
    #[error("not a catalog page or index (bad magic)")]
    BadMagic,
    #[error("a catalog field is out of its range")]
    OutOfRange,
    #[error("a catalog name is not a relative path (empty, `..`, absolute, NUL or `\\`)")]
    BadName,
    #[error("catalog entries are not in name order, or a name repeats")]
    Unordered,
}

/// Whether `name` is a path a hub may write under its export folder:
/// `/`-separated, not empty, no empty, `.` or `..` part (so not absolute),
/// no NUL and no `\`.
pub fn valid_path_name(name: &str) -> bool {
    !name.is_empty()
        && !name.contains(['\0', '\\'])
        && name.split('/').all(|part| !part.is_empty() && part != "." && part != "..")
}

/// A media type: `type/subtype`, printable ASCII without spaces, bounded.
fn valid_content_type(t: &str) -> bool {
    t.len() <= MAX_CONTENT_TYPE_LEN && t.bytes().all(|b| b.is_ascii_graphic())
}

impl Entry {
    /// Bytes this entry takes in a page.
    pub fn encoded_len(&self) -> usize {
        32 + 8
            + 8
            + 1
            + 2
            + self.name.len()
            + 1
            + self.content_type.len()
            + 2
            + self.title.len()
            + 2
            + self.description.len()
            + 1
            + self.tags.iter().map(|t| 1 + t.len()).sum::<usize>()
    }

    /// Whether it fits the format's limits (the broadcaster checks before it
    /// publishes; a hub's decoder refuses what does not).
    pub fn check(&self) -> Result<(), CatalogError> {
        if !valid_path_name(&self.name) || self.name.len() > crate::wire::MAX_NAME_LEN {
            return Err(CatalogError::BadName);
        }
        let fits = valid_content_type(&self.content_type)
            && self.title.len() <= MAX_TITLE_LEN
            && self.description.len() <= MAX_DESCRIPTION_LEN
            && self.tags.len() <= MAX_TAGS
            && self.tags.iter().all(|t| !t.is_empty() && t.len() <= MAX_TAG_LEN);
        if fits {
            Ok(())
        } else {
            Err(CatalogError::OutOfRange)
        }
    }

    /// Append the entry as a page holds it.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.id.0);
        out.extend_from_slice(&self.size.to_be_bytes());
        out.extend_from_slice(&self.published.to_be_bytes());
        out.push(u8::from(self.on_demand));
        put_str16(out, &self.name);
        out.push(self.content_type.len() as u8);
        out.extend_from_slice(self.content_type.as_bytes());
        put_str16(out, &self.title);
        put_str16(out, &self.description);
        out.push(self.tags.len() as u8);
        for t in &self.tags {
            out.push(t.len() as u8);
            out.extend_from_slice(t.as_bytes());
        }
    }

    /// One entry, as [`Entry::encode`] wrote it, alone.
    pub fn decode_one(bytes: &[u8]) -> Result<Entry, CatalogError> {
        let mut r = Reader { buf: bytes, at: 0 };
        let e = Entry::decode(&mut r)?;
        match r.remaining() {
            0 => Ok(e),
            _ => Err(CatalogError::Oversized),
        }
    }

    fn decode(r: &mut Reader<'_>) -> Result<Entry, CatalogError> {
        let id = ObjectId(r.array()?);
        let size = r.u64()?;
        let published = r.u64()?;
        let on_demand = match r.u8()? {
            0 => false,
            1 => true,
            _ => return Err(CatalogError::OutOfRange),
        };
        let name = r.str16(crate::wire::MAX_NAME_LEN)?;
        let content_type = r.str8(MAX_CONTENT_TYPE_LEN)?;
        let title = r.str16(MAX_TITLE_LEN)?;
        let description = r.str16(MAX_DESCRIPTION_LEN)?;
        let tag_count = r.u8()? as usize;
        if tag_count > MAX_TAGS {
            return Err(CatalogError::OutOfRange);
        }
        let mut tags = Vec::with_capacity(tag_count);
        for _ in 0..tag_count {
            tags.push(r.str8(MAX_TAG_LEN)?);
        }
        let e = Entry { id, name, size, published, on_demand, content_type, title, description, tags };
        e.check()?;
        Ok(e)
    }
}

fn put_str16(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// Split entries (sorted by name, checked) into pages of at most
/// [`MAX_PAGE_ENTRIES`] entries and `page_bytes` bytes each (at most
/// [`MAX_PAGE_BYTES`]), encoded.
pub fn encode_pages(entries: &[Entry], page_bytes: usize) -> Vec<Vec<u8>> {
    let limit = page_bytes.clamp(8 + 4096, MAX_PAGE_BYTES);
    let mut pages = Vec::new();
    let mut at = 0;
    while at < entries.len() {
        let mut bytes = 8;
        let mut end = at;
        while end < entries.len() && end - at < MAX_PAGE_ENTRIES {
            let len = entries[end].encoded_len();
            if end > at && bytes + len > limit {
                break;
            }
            bytes += len;
            end += 1;
        }
        let mut page = Vec::with_capacity(bytes);
        page.extend_from_slice(&PAGE_MAGIC);
        page.extend_from_slice(&((end - at) as u32).to_be_bytes());
        for e in &entries[at..end] {
            e.encode(&mut page);
        }
        pages.push(page);
        at = end;
    }
    pages
}

/// A page's entries, each checked, in strictly rising name order.
pub fn decode_page(bytes: &[u8]) -> Result<Vec<Entry>, CatalogError> {
    if bytes.len() > MAX_PAGE_BYTES {
        return Err(CatalogError::Oversized);
    }
    let mut r = Reader { buf: bytes, at: 0 };
    if r.array::<4>()? != PAGE_MAGIC {
        return Err(CatalogError::BadMagic);
    }
    let n = r.u32()? as usize;
    // The smallest entry takes 57 bytes: a count past what is left is a lie.
    if n > MAX_PAGE_ENTRIES || n > r.remaining() / 57 {
        return Err(CatalogError::OutOfRange);
    }
    let mut entries: Vec<Entry> = Vec::with_capacity(n);
    for _ in 0..n {
        let e = Entry::decode(&mut r)?;
        if entries.last().is_some_and(|last| last.name >= e.name) {
            return Err(CatalogError::Unordered);
        }
        entries.push(e);
    }
    if r.remaining() != 0 {
        return Err(CatalogError::Oversized);
    }
    Ok(entries)
}

/// One row of the index: a page's object id and how many entries it holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageRef {
    pub id: ObjectId,
    pub entries: u32,
}

pub fn encode_index(pages: &[PageRef]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + pages.len() * INDEX_ROW);
    out.extend_from_slice(&INDEX_MAGIC);
    out.extend_from_slice(&(pages.len() as u32).to_be_bytes());
    for p in pages {
        out.extend_from_slice(&p.id.0);
        out.extend_from_slice(&p.entries.to_be_bytes());
    }
    out
}

pub fn decode_index(bytes: &[u8]) -> Result<Vec<PageRef>, CatalogError> {
    if bytes.len() > MAX_INDEX_BYTES {
        return Err(CatalogError::Oversized);
    }
    let mut r = Reader { buf: bytes, at: 0 };
    if r.array::<4>()? != INDEX_MAGIC {
        return Err(CatalogError::BadMagic);
    }
    let n = r.u32()? as usize;
    if n > MAX_PAGES || r.remaining() != n * INDEX_ROW {
        return Err(CatalogError::OutOfRange);
    }
    let mut pages = Vec::with_capacity(n);
    for _ in 0..n {
        let id = ObjectId(r.array()?);
        let entries = r.u32()?;
        if entries == 0 || entries as usize > MAX_PAGE_ENTRIES {
            return Err(CatalogError::OutOfRange);
        }
        pages.push(PageRef { id, entries });
    }
    Ok(pages)
}

/// The names of a catalog version's objects.
pub fn index_name(version: u64) -> String {
    format!("{CATALOG_PREFIX}{version}/index")
}

pub fn page_name(version: u64, page: usize) -> String {
    format!("{CATALOG_PREFIX}{version}/{page:05}")
}

/// Whether an object's name is one of the catalog's own.
pub fn is_catalog_name(name: &str) -> bool {
    name.starts_with(CATALOG_PREFIX)
}

struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], CatalogError> {
        let end = self.at.checked_add(n).filter(|e| *e <= self.buf.len()).ok_or(CatalogError::Truncated)?;
        let s = &self.buf[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], CatalogError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn u8(&mut self) -> Result<u8, CatalogError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, CatalogError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, CatalogError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, CatalogError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    /// A string whose length comes first, in one byte.
    fn str8(&mut self, max: usize) -> Result<String, CatalogError> {
        let len = self.u8()? as usize;
        self.str(len, max)
    }

    /// A string whose length comes first, in two bytes.
    fn str16(&mut self, max: usize) -> Result<String, CatalogError> {
        let len = self.u16()? as usize;
        self.str(len, max)
    }

    fn str(&mut self, len: usize, max: usize) -> Result<String, CatalogError> {
        if len > max {
            return Err(CatalogError::OutOfRange);
        }
        let s = std::str::from_utf8(self.take(len)?).map_err(|_| CatalogError::OutOfRange)?;
        Ok(s.to_owned())
    }

    fn remaining(&self) -> usize {
        self.buf.len() - self.at
    }
}

#[cfg(test)]
mod tests;
