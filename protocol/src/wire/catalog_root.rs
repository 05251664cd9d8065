//! The catalog's root (kind 6): the signed head of the channel's catalog
//! (`crate::catalog`). Layout in docs/PROTOCOL.md.

use super::*;

/// The signed root of the channel's catalog.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CatalogRoot {
    /// Rises with every catalog the broadcaster publishes (the sequence
    /// number's place): a hub takes only a higher one than it holds.
    pub version: u64,
    pub expiry: u64,
    /// Entries in the whole catalog.
    pub entries: u64,
    /// Pages the index lists (≥ 1 when there are entries).
    pub pages: u32,
    /// The index object's id (an archive id: its name is
    /// `catalog::index_name(version)`) and size.
    pub index_id: ObjectId,
    pub index_size: u64,
}

pub const CATALOG_ROOT_LEN: usize = HEADER_LEN + CERTIFICATE_LEN + 8 + 8 + 8 + 4 + 32 + 8 + SIGNATURE_LEN;

pub(super) fn decode_catalog_root(r: &mut Reader<'_>) -> Result<Signed<CatalogRoot>, WireError> {
    let (cert, version, expiry) = decode_signed_head(r)?;
    let entries = r.u64()?;
    let pages = r.u32()?;
    let index_id = ObjectId(r.array()?);
    let index_size = r.u64()?;
    let pages_fit = pages as usize <= crate::catalog::MAX_PAGES
        && entries <= u64::from(pages) * crate::catalog::MAX_PAGE_ENTRIES as u64
        && (entries == 0) == (pages == 0)
        && index_size == 8 + u64::from(pages) * 36;
    if !pages_fit {
        return Err(WireError::OutOfRange);
    }
    finish_signed(r, CatalogRoot { version, expiry, entries, pages, index_id, index_size }, cert)
}

/// The bytes a catalog root's signature covers.
pub fn catalog_root_signed_bytes(c: &CatalogRoot, cert: &Certificate, channel_tag: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(CATALOG_ROOT_LEN);
    put_header(&mut out, Kind::CatalogRoot, channel_tag);
    put_signed_head(&mut out, cert, c.version, c.expiry);
    out.extend_from_slice(&c.entries.to_be_bytes());
    out.extend_from_slice(&c.pages.to_be_bytes());
    out.extend_from_slice(&c.index_id.0);
    out.extend_from_slice(&c.index_size.to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_catalog_root_round_trips_and_inconsistent_counts_are_refused() {
        let keys = hubcast_keys::ChannelKeys::generate(&mut rand::rngs::OsRng, 1000, 10);
        let cert = keys.signer.cert.clone();
        let datagram = |c: &CatalogRoot| {
            let mut d = catalog_root_signed_bytes(c, &cert, 9);
            d.extend_from_slice(&[0u8; SIGNATURE_LEN]);
            d
        };
        let root = CatalogRoot {
            version: 77,
            expiry: 5000,
            entries: 5000,
            pages: 2,
            index_id: ObjectId([3; 32]),
            index_size: 8 + 2 * 36,
        };
        let d = datagram(&root);
        assert_eq!(d.len(), CATALOG_ROOT_LEN);
        let Ok((h, Datagram::CatalogRoot(got))) = decode(&d) else { panic!("a catalog root") };
        assert_eq!((h.kind, got.body), (Kind::CatalogRoot, root));
        let empty = CatalogRoot { entries: 0, pages: 0, index_size: 8, ..root };
        assert!(decode(&datagram(&empty)).is_ok(), "an empty catalog");
        for bad in [
            CatalogRoot { entries: 2 * 4096 + 1, ..root },
            CatalogRoot { entries: 0, ..root },
            CatalogRoot { pages: 0, index_size: 8, ..root },
            CatalogRoot { index_size: 9, ..root },
            CatalogRoot { pages: 65_537, entries: 1, index_size: 8 + 65_537 * 36, ..root },
        ] {
            assert_eq!(decode(&datagram(&bad)), Err(WireError::OutOfRange), "{bad:?}");
        }
        let mut long = d.clone();
        long.push(0);
        assert_eq!(decode(&long), Err(WireError::Oversized));
        assert_eq!(decode(&d[..d.len() - 1]), Err(WireError::Truncated));
    }
}
