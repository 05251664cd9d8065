//! `--remulticast`: a hub fed by a bridge sends the feed out again on its
//! own LAN.

use super::*;

/// Repair symbols a `--remulticast` hub adds to each chunk, as a share of K:
/// the LAN's own loss is covered without a round trip.
const REMULTICAST_FEC: f64 = 0.05;
/// A `--remulticast` hub repeats an object's manifest every this many chunks,
/// so a hub that joins the LAN midway learns it.
const MANIFEST_EVERY_CHUNKS: u32 = 8;

/// `--remulticast`: send the feed this hub takes from a bridge out again on
/// its own LAN, so the hubs there receive it as multicast and the desert
/// becomes an island. Each chunk goes out as its signed ticket, table pages,
/// K source symbols and [`REMULTICAST_FEC`] repair symbols, read from this
/// hub's store (so only what it verified), every datagram marked relayed: a
/// hub that hears relayed multicast never acts as a bridge, so feeds cannot
/// loop. Chunks that arrive while this hub hears the multicast itself
/// (`active` false) are not sent again. Paced at `rate` bytes/s.
#[allow(clippy::too_many_arguments)]
pub async fn remulticast(
    feed: Arc<Feed>,
    server: Arc<Server>,
    socket: tokio::net::UdpSocket,
    group: std::net::SocketAddr,
    active: Arc<AtomicBool>,
    rate: f64,
    sent: Arc<AtomicU64>,
    cancel: CancellationToken,
) {
    let mut pacer = hubcast_daemon::Bucket::new(rate.max(1500.0));
    let mut at = feed.ring().next_seq.checked_sub(1);
    let mut last_object = None;
    let mut warned = false;
    loop {
        let changed = feed.changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        let (next, manifest) = feed.ring().after_with_manifest(at);
        let Some(chunk) = next else {
            tokio::select! {
                _ = changed => {}
                _ = cancel.cancelled() => return,
            }
            continue;
        };
        at = Some(chunk.seq);
        if !active.load(Relaxed) {
            continue;
        }
        let mut datagrams = Vec::new();
        if last_object != Some(chunk.object_id) || chunk.index % MANIFEST_EVERY_CHUNKS == 0 {
            datagrams.extend(manifest.map(|m| m.to_vec()));
            last_object = Some(chunk.object_id);
        }
        let repair = (f64::from(chunk.k) * REMULTICAST_FEC).ceil() as u32;
        if let Some(req) = chunk_request(&chunk, chunk.k + repair) {
            if let Some(d) = feed.answer(&server, &req).await {
                datagrams.extend(d.iter().cloned());
            }
        }
        for mut d in datagrams {
            wire::mark_relayed(&mut d);
            let wait = pacer.take(d.len() as f64);
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
            match socket.send_to(&d, group).await {
                Ok(_) => {
                    sent.fetch_add(d.len() as u64, Relaxed);
                }
                Err(e) if !warned => {
                    warned = true;
                    tracing::warn!("--remulticast {group}: {e} (is the interface right? try --iface)");
                }
                Err(_) => {}
            }
        }
    }
}
