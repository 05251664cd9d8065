//! `--remulticast`: a hub fed by a bridge sends the feed out again on its
//! own LAN.

use super::udp::{feed_sends, head_copies, send_plan};
use super::*;
use hubcast_protocol::announce::LOSS_UNKNOWN;

/// The loss a `--remulticast` hub sizes its relay for before any hub of its
/// LAN announces one.
const PRIOR_LAN_LOSS: f64 = 0.05;
/// A `--remulticast` hub repeats an object's manifest every this many chunks,
/// so a hub that joins the LAN midway learns it.
const MANIFEST_EVERY_CHUNKS: u32 = 8;

/// What a `--remulticast` hub's relay shares with the hub's loop.
#[derive(Debug)]
pub struct Relay {
    /// The hub is fed by a bridge: the feed goes out on the LAN.
    pub active: AtomicBool,
    /// The worst loss the LAN's hubs announce, whole percent
    /// ([`LOSS_UNKNOWN`] while none does).
    pub lan_loss: AtomicU8,
    /// Bytes sent on the LAN.
    pub sent: AtomicU64,
}

impl Default for Relay {
    fn default() -> Self {
        Relay {
            active: AtomicBool::new(false),
            lan_loss: AtomicU8::new(LOSS_UNKNOWN),
            sent: AtomicU64::new(0),
        }
    }
}

impl Relay {
    /// The loss to size the next chunk for.
    fn loss(&self) -> f64 {
        match self.lan_loss.load(Relaxed) {
            LOSS_UNKNOWN => PRIOR_LAN_LOSS,
            percent => f64::from(percent.min(100)) / 100.0,
        }
    }
}

/// The datagrams that carry one chunk over a LAN losing `loss`, in order:
/// as many symbols as a feed over such a link sends ([`feed_sends`]), with
/// `head` (the manifest when due, the ticket, the table pages) first and
/// again at even steps ([`head_copies`]); `head` alone when there are no
/// symbols.
fn relay_plan<'a>(k: u32, loss: f64, head: &[&'a [u8]], symbols: &[&'a [u8]]) -> Vec<&'a [u8]> {
    if symbols.is_empty() {
        return head.to_vec();
    }
    let sends = feed_sends(k, wire::n_max(k), loss) as usize;
    send_plan(sends, head_copies(loss), head, symbols)
}

/// `--remulticast`: send the feed this hub takes from a bridge out again on
/// its own LAN, so the hubs there receive it as multicast and the desert
/// becomes an island. Each chunk goes out as a feed over a lossy link does
/// ([`relay_plan`]), sized for the worst loss the LAN's hubs announce
/// ([`Relay::lan_loss`]), read from this hub's store (so only what it
/// verified), every datagram marked relayed: a hub that hears relayed
/// multicast never acts as a bridge, so feeds cannot loop. Chunks that
/// arrive while this hub hears the multicast itself (`active` false) are not
/// sent again. Paced at `rate` bytes/s.
pub async fn remulticast(
    feed: Arc<Feed>,
    server: Arc<Server>,
    socket: tokio::net::UdpSocket,
    group: std::net::SocketAddr,
    relay: Arc<Relay>,
    rate: f64,
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
        if !relay.active.load(Relaxed) {
            continue;
        }
        let mut head: Vec<&[u8]> = Vec::new();
        if last_object != Some(chunk.object_id) || chunk.index % MANIFEST_EVERY_CHUNKS == 0 {
            head.extend(manifest.as_deref());
            last_object = Some(chunk.object_id);
        }
        let loss = relay.loss();
        let esis = feed_sends(chunk.k, wire::n_max(chunk.k), loss).min(wire::n_max(chunk.k));
        let answer = match chunk_request(&chunk, esis) {
            Some(req) => feed.answer(&server, &req).await,
            None => None,
        };
        let mut symbols = Vec::new();
        for d in answer.iter().flat_map(|a| a.iter()) {
            match wire::peek_esi(d) {
                Some(_) => symbols.push(d.as_slice()),
                None => head.push(d),
            }
        }
        let datagrams = relay_plan(chunk.k, loss, &head, &symbols);
        for d in datagrams {
            let mut d = d.to_vec();
            wire::mark_relayed(&mut d);
            let wait = pacer.take(d.len() as f64);
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
            match socket.send_to(&d, group).await {
                Ok(_) => {
                    relay.sent.fetch_add(d.len() as u64, Relaxed);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_relay_is_sized_for_the_worst_loss_its_lan_announces() {
        let relay = Relay::default();
        assert_eq!(relay.loss(), PRIOR_LAN_LOSS, "no hub has announced one yet");
        relay.lan_loss.store(50, Relaxed);
        assert_eq!(relay.loss(), 0.5);
        // Head datagrams are two bytes long here, symbols one.
        let h = [[1u8, 0], [2, 0], [3, 0]];
        let head: Vec<&[u8]> = h.iter().map(|d| &d[..]).collect();
        let s: Vec<u8> = (0..=255).collect();
        let symbols: Vec<&[u8]> = s.iter().map(std::slice::from_ref).collect();
        let k = 200;
        let count = |plan: &[&[u8]], heads: bool| plan.iter().filter(|d| (d.len() == 2) == heads).count();
        for (loss, copies) in [(0.05, 2), (0.5, 7)] {
            let plan = relay_plan(k, loss, &head, &symbols);
            let sends = feed_sends(k, wire::n_max(k), loss) as usize;
            assert_eq!(count(&plan, false), sends, "loss {loss}: the symbols a feed over such a link sends");
            assert_eq!(count(&plan, true), copies * head.len(), "loss {loss}: the head this often");
        }
        let at_half = relay_plan(k, 0.5, &head, &symbols).len();
        assert!(at_half > 2 * k as usize, "at 50% more than twice K goes out: {at_half}");
        // A chunk whose symbols could not be read: its head alone, never a panic.
        assert_eq!(relay_plan(k, 0.5, &head, &[]), head);
    }
}
