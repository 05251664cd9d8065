//! A feed's symbols as plain datagrams, where the subscriber gave a port.
//!
//! On a reliable stream a link that loses half its packets each way stalls:
//! each hole waits for QUIC's probe timeout, which doubles whenever its ACK
//! is lost too, and the congestion window reads the random loss (and the
//! delay its retransmissions add) as a queue. In the network lab at 50% the
//! hubs fed that way took 90-300 s or never completed. Multicast is never
//! resent: the channel sends more symbols than any chunk needs. A feed does
//! the same: the manifest, ticket and table pages go on the subscription's
//! stream as before (few, and each one needed), and the symbols go as plain
//! UDP datagrams to the subscriber's address, never resent, as many as the
//! link's loss asks for ([`feed_sends`]), at the bridge's `--upload-rate`. The
//! ticket and pages go on UDP too, ahead of the symbols and again halfway,
//! so a symbol seldom waits in the desert hub's pending buffer for a ticket
//! the stream is still resending. The desert hub checks every datagram as it
//! checks multicast.
//!
//! The loss is what the desert hub measures of the feed's symbols (the gaps
//! in the ESIs of each chunk's pass, as it measures multicast), reported in
//! its nudges, the one-byte QUIC datagrams that keep the connection heard
//! ([`NUDGE_UNKNOWN`] until it knows); before a report, the QUIC connection's
//! own count. A desert hub's link that drops more than [`MAX_FEED_LOSS`]
//! gets symbols sized for that bound and repairs the rest.

use super::*;
use hubcast_protocol::loss::LossMeter;
use hubcast_protocol::origin::resend_size_over;
use std::sync::atomic::AtomicU8;

/// A feed sizes its symbols for at most this loss on a subscriber's link.
pub const MAX_FEED_LOSS: f64 = 0.6;
/// The loss assumed before the connection has a reading.
const PRIOR_LOSS: f64 = 0.2;
/// Packets a connection must have sent since the last reading before its
/// loss is read again.
const LOSS_SAMPLE_PACKETS: u64 = 32;
/// Datagrams sent per pacing step.
const BURST: usize = 16;
/// Datagrams handed to the loop at once.
const BATCH: usize = 64;
/// Symbols beyond K the subscriber should get of each chunk.
const MARGIN: u32 = 2;
/// A subscriber that sends nothing this long (it nudges every 100 ms) is
/// taken for gone: at 50% loss, 30 nudges in a row lost happen once in a
/// billion.
pub const SUBSCRIBER_SILENCE: Duration = Duration::from_secs(3);
/// A nudge's byte before the desert hub knows its loss.
pub const NUDGE_UNKNOWN: u8 = 255;
/// A subscriber's socket: room for a chunk and a half of datagrams.
pub const RECEIVE_BUFFER: usize = 4 << 20;
/// The first byte of a subscriber's ask to feed chunks again; then, per
/// chunk, its object id and index (u32, big-endian).
pub const REFEED: u8 = 0xfe;
const REFEED_ENTRY: usize = 36;
/// Chunks one ask names at most (a datagram under 1,200 bytes).
pub const REFEED_PER_ASK: usize = 32;
/// Chunks a subscription keeps asked for again at most; older asks go.
const REFEED_QUEUE: usize = 64;

/// The asks to feed `chunks` again, at most [`REFEED_PER_ASK`] a datagram.
pub fn refeed_asks(chunks: &[(ObjectId, u32)]) -> Vec<bytes::Bytes> {
    chunks
        .chunks(REFEED_PER_ASK)
        .map(|batch| {
            let mut d = Vec::with_capacity(1 + batch.len() * REFEED_ENTRY);
            d.push(REFEED);
            for (object_id, index) in batch {
                d.extend_from_slice(&object_id.0);
                d.extend_from_slice(&index.to_be_bytes());
            }
            d.into()
        })
        .collect()
}

/// Queue the chunks asked for again: each once, at most [`REFEED_QUEUE`]
/// (the oldest asks go first).
fn queue_again(again: &mut VecDeque<(ObjectId, u32)>, asked: Vec<(ObjectId, u32)>) {
    for chunk in asked {
        if !again.contains(&chunk) {
            again.push_back(chunk);
        }
    }
    while again.len() > REFEED_QUEUE {
        again.pop_front();
    }
}

/// The chunks an ask names; none when it is not one, or is malformed.
pub fn parse_refeed(d: &[u8]) -> Vec<(ObjectId, u32)> {
    let Some((&REFEED, entries)) = d.split_first() else { return Vec::new() };
    if entries.is_empty()
        || entries.len() % REFEED_ENTRY != 0
        || entries.len() > REFEED_PER_ASK * REFEED_ENTRY
    {
        return Vec::new();
    }
    entries
        .chunks_exact(REFEED_ENTRY)
        .map(|e| {
            let (id, index) = e.split_at(32);
            let id: [u8; 32] = id.try_into().unwrap_or([0; 32]);
            let index: [u8; 4] = index.try_into().unwrap_or([0; 4]);
            (ObjectId(id), u32::from_be_bytes(index))
        })
        .collect()
}

/// How many symbols of a chunk of `k` (its table covers `n` ESIs) to send
/// over a link losing `loss` of its packets, so that the subscriber gets
/// K + 2 distinct ones with about 98% odds. ESIs go in order, 0..n, then again
/// from 0: a second copy arrives where the first was lost (odds `loss` × (1 −
/// `loss`) of a new one). At most two copies of each; with no loss, K + 2.
pub fn feed_sends(k: u32, n: u32, loss: f64) -> u32 {
    if k == 0 || n == 0 {
        return 0;
    }
    let p = loss.clamp(0.0, MAX_FEED_LOSS);
    resend_size_over(k + MARGIN, p, 0, n, p, 2 * n).min(2 * n)
}

/// Copies of a chunk's head to send with its symbols over a link losing
/// `loss`: enough that a table page is missed by all with odds of 1% or
/// less (a symbol waits for its page; at 50% loss, two copies left a
/// quarter of the pages missing, and their symbols were pushed out of the
/// desert hub's pending buffer before the stream brought them). 2 to 8.
pub fn head_copies(loss: f64) -> usize {
    let p = loss.clamp(0.0, MAX_FEED_LOSS);
    if p <= 0.0 {
        return 2;
    }
    ((0.01f64.ln() / p.ln()).ceil() as usize).clamp(2, 8)
}

/// The order of a chunk's datagrams: `sends` symbols (ESI order, wrapping),
/// with `head` first and again after each `sends / copies` of them.
pub(super) fn send_plan<'a>(
    sends: usize,
    copies: usize,
    head: &[&'a [u8]],
    symbols: &[&'a [u8]],
) -> Vec<&'a [u8]> {
    let mut plan = Vec::with_capacity(sends + copies * head.len());
    let every = sends.div_ceil(copies.max(1)).max(1);
    for i in 0..sends {
        if i % every == 0 {
            plan.extend_from_slice(head);
        }
        plan.push(symbols[i % symbols.len()]);
    }
    plan
}

/// The loss of a subscriber's link as its QUIC connection counts it, since
/// the last reading, smoothed.
#[derive(Debug)]
struct LinkLoss {
    sent: u64,
    lost: u64,
    loss: f64,
}

impl LinkLoss {
    fn new() -> Self {
        LinkLoss { sent: 0, lost: 0, loss: PRIOR_LOSS }
    }

    fn update(&mut self, sent: u64, lost: u64) -> f64 {
        let (ds, dl) = (sent.saturating_sub(self.sent), lost.saturating_sub(self.lost));
        if ds >= LOSS_SAMPLE_PACKETS {
            let sample = dl.min(ds) as f64 / ds as f64;
            self.loss = 0.5 * self.loss + 0.5 * sample;
            (self.sent, self.lost) = (sent, lost);
        }
        self.loss
    }
}

/// The bridge's side: one subscription's datagrams to its port.
pub(crate) struct UdpFeed {
    socket: Arc<tokio::net::UdpSocket>,
    to: SocketAddr,
    conn: quinn::Connection,
    loss: LinkLoss,
    /// The subscriber's last report, percent ([`NUDGE_UNKNOWN`]: none).
    reported: Arc<AtomicU8>,
    /// Chunks the subscriber asked to be fed again, oldest first.
    again: Arc<Mutex<VecDeque<(ObjectId, u32)>>>,
}

impl UdpFeed {
    /// Symbols to `port` at the address the connection comes from.
    pub(crate) fn open(conn: quinn::Connection, port: u16) -> std::io::Result<Self> {
        let to = SocketAddr::new(conn.remote_address().ip(), port);
        let any: IpAddr =
            if to.is_ipv4() { Ipv4Addr::UNSPECIFIED.into() } else { Ipv6Addr::UNSPECIFIED.into() };
        let socket = hubcast_transport::udp::bind_any_port(any, 1 << 16)?;
        let reported = Arc::new(AtomicU8::new(NUDGE_UNKNOWN));
        let again = Arc::new(Mutex::new(VecDeque::new()));
        Ok(UdpFeed { socket: Arc::new(socket), to, conn, loss: LinkLoss::new(), reported, again })
    }

    /// Read the subscriber's nudges (and drop them, so they never pile up),
    /// keeping the loss each reports and the chunks it asks to be fed again
    /// (at most [`REFEED_QUEUE`], each once). Ends when the subscriber has
    /// sent none for [`SUBSCRIBER_SILENCE`] (it nudges every 100 ms): it
    /// left, and its feed must not go on into the void until the QUIC
    /// connection's idle timeout (a bridge at 50% loss fed a hub that had
    /// moved on for 20 s more, at its whole upload). Otherwise never ends
    /// while the connection lives.
    pub(crate) fn read_reports(&self) -> impl std::future::Future<Output = ()> + 'static {
        let (conn, reported, again) = (self.conn.clone(), self.reported.clone(), self.again.clone());
        async move {
            loop {
                let d = match tokio::time::timeout(SUBSCRIBER_SILENCE, conn.read_datagram()).await {
                    Ok(Ok(d)) => d,
                    Ok(Err(_)) => break,
                    Err(_) => {
                        debug!(
                            "bridge: no word from a subscriber for {} s: ending its feed",
                            SUBSCRIBER_SILENCE.as_secs()
                        );
                        return;
                    }
                };
                if let [percent @ 0..=100] = d[..] {
                    reported.store(percent, Relaxed);
                }
                let asked = parse_refeed(&d);
                if !asked.is_empty() {
                    debug!(chunks = asked.len(), "bridge: a subscriber asks to be fed chunks again");
                    queue_again(&mut again.lock().unwrap_or_else(|p| p.into_inner()), asked);
                }
            }
            std::future::pending().await
        }
    }

    /// The next chunk the subscriber asked to be fed again.
    pub(crate) fn take_again(&self) -> Option<(ObjectId, u32)> {
        self.again.lock().unwrap_or_else(|p| p.into_inner()).pop_front()
    }

    /// The subscription's heartbeats ([`HEARTBEAT_EVERY`]), until sending fails.
    pub(crate) fn heartbeat(&self) -> impl std::future::Future<Output = ()> + 'static {
        let (socket, to) = (self.socket.clone(), self.to);
        async move {
            let mut every = tokio::time::interval(HEARTBEAT_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                if socket.send_to(&[0], to).await.is_err() {
                    return;
                }
            }
        }
    }

    /// What to send of a chunk of `k`: the ESIs to read (0..the first; all
    /// N_max when a second copy of some is due), and the loss it is sized
    /// for. Repair symbols past those are never encoded.
    pub(crate) fn sizing(&mut self, k: u32) -> (u32, f64) {
        let (loss, n) = (self.loss(), wire::n_max(k));
        (feed_sends(k, n, loss).min(n), loss)
    }

    /// The link's loss now, as the feed sizes a chunk for it: the
    /// subscriber's report, else the connection's count.
    pub(crate) fn loss(&mut self) -> f64 {
        let path = self.conn.stats().path;
        let counted = self.loss.update(path.sent_packets, path.lost_packets);
        match self.reported.load(Relaxed) {
            NUDGE_UNKNOWN => counted,
            percent => f64::from(percent) / 100.0,
        }
    }

    /// Send a chunk of `k`: its symbols sized for the link's loss, with
    /// `head` (manifest, ticket, table pages) first and again at even steps
    /// ([`head_copies`]); paced at the bridge's upload rate. Returns the
    /// bytes sent.
    pub(crate) async fn send_chunk(
        &mut self,
        (k, loss): (u32, f64),
        head: &[&[u8]],
        symbols: &[&[u8]],
        server: &Server,
    ) -> std::io::Result<usize> {
        let sends = feed_sends(k, wire::n_max(k), loss) as usize;
        let plan = send_plan(sends, head_copies(loss), head, symbols);
        let mut bytes = 0;
        for burst in plan.chunks(BURST) {
            let size: usize = burst.iter().map(|d| d.len()).sum();
            server.pace(size).await;
            for d in burst {
                self.socket.send_to(d, self.to).await?;
            }
            bytes += size;
        }
        Ok(bytes)
    }
}

/// The desert hub's side: the feed's datagrams from the bridge's address
/// into the loop, in batches, until the socket fails or the bridge goes
/// silent (nothing, heartbeats included, for `silent_after`), or (the
/// answer's `Err`) nothing ever came in `first_within`: a NAT or a firewall
/// in the way.
/// The loss of the feed's symbols goes to `loss` in whole percent, once known.
pub(crate) async fn read_udp<E>(
    socket: &tokio::net::UdpSocket,
    bridge: IpAddr,
    (first_within, silent_after): (Duration, Duration),
    loss: &AtomicU8,
    events: &mpsc::Sender<E>,
    datagrams_event: impl Fn(Vec<Vec<u8>>) -> E,
) -> Result<String, String> {
    let mut meter = LossMeter::default();
    let mut heard: Option<tokio::time::Instant> = None;
    let started = tokio::time::Instant::now();
    let mut strangers = 0u64;
    let mut buf = vec![0u8; wire::MAX_DATAGRAM + 1];
    loop {
        let until = heard.map_or(started + first_within, |t| t + silent_after);
        let first = match tokio::time::timeout_at(until, socket.recv_from(&mut buf)).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => return Ok(format!("the feed's UDP socket failed: {e}")),
            Err(_) if heard.is_some() => {
                return Ok(format!(
                    "the bridge went silent: no datagram for {} s",
                    silent_after.as_secs_f64()
                ))
            }
            Err(_) => {
                return Err(format!(
                    "no datagram from the bridge on UDP port {} in {} s (a NAT or firewall?): taking the \
                     feed on the stream",
                    socket.local_addr().map_or(0, |a| a.port()),
                    first_within.as_secs_f64()
                ))
            }
        };
        let mut batch = Vec::new();
        let mut next = Some(first);
        while let Some((n, from)) = next {
            // Only the bridge's datagrams: a stranger's (checked or not) must
            // not count against the bridge, nor keep it for alive.
            if unmapped(from.ip()) != unmapped(bridge) {
                strangers += 1;
                if strangers.is_power_of_two() {
                    debug!(%from, strangers, "datagrams on the feed's port from another address; dropped");
                }
            } else {
                heard = Some(tokio::time::Instant::now());
                let d = &buf[..n];
                if let (Some(chunk), Some(esi)) = (wire::peek_chunk(d, wire::Kind::Symbol), wire::peek_esi(d))
                {
                    meter.heard(chunk, esi);
                }
                if n >= wire::HEADER_LEN {
                    batch.push(d.to_vec());
                }
            }
            next = if batch.len() < BATCH { socket.try_recv_from(&mut buf).ok() } else { None };
        }
        if let Some(percent) = meter.known_percent() {
            loss.store(percent, Relaxed);
        }
        if !batch.is_empty() && events.send(datagrams_event(batch)).await.is_err() {
            return Ok("the hub is stopping".into());
        }
    }
}

/// A feed whose UDP port gets nothing (not even a heartbeat) for this long
/// from its start is taken on the stream instead.
pub const UDP_SILENCE: Duration = Duration::from_secs(5);
/// The bridge sends a heartbeat (a datagram shorter than any of the wire's)
/// this often, so its desert hubs tell it alive from UDP alone: at 50% loss,
/// 30 in a row are lost once in a billion.
pub const HEARTBEAT_EVERY: Duration = Duration::from_millis(100);

fn unmapped(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_feed_sends_enough_symbols_for_the_links_loss_and_at_most_two_copies() {
        let (k, n) = (820, wire::n_max(820));
        assert_eq!(feed_sends(k, n, 0.0), k + MARGIN, "no loss: K + 2");
        // Expected distinct arrivals when ESIs go in order and wrap at n.
        let expected = |sends: u32, loss: f64| {
            let copies = |e: u32| sends / n + u32::from(e < sends % n);
            (0..n).map(|e| 1.0 - loss.powi(copies(e) as i32)).sum::<f64>()
        };
        for (loss, most) in [(0.05, 900), (0.2, 1_100), (0.5, 2_300)] {
            let sends = feed_sends(k, n, loss);
            let got = expected(sends, loss);
            assert!(got >= f64::from(k + MARGIN), "loss {loss}: {got} expected of {sends} sent");
            assert!(sends <= most, "loss {loss}: {sends} sends");
        }
        // Beyond the bound, sized for the bound; never past two copies.
        assert_eq!(feed_sends(k, n, 0.95), feed_sends(k, n, MAX_FEED_LOSS));
        assert!(feed_sends(k, n, MAX_FEED_LOSS) <= 2 * n);
        assert_eq!(feed_sends(0, 0, 0.5), 0, "an empty object's entry: nothing");
    }

    #[test]
    fn the_head_goes_often_enough_that_a_page_is_seldom_missed_and_spread_over_the_symbols() {
        assert_eq!([0.0, 0.05, 0.1, 0.2, 0.5, 0.9].map(head_copies), [2, 2, 2, 3, 7, 8]);
        for p in [0.05f64, 0.2, 0.5] {
            assert!(p.powi(head_copies(p) as i32) <= 0.01, "loss {p}");
        }
        let (h, s): (Vec<u8>, Vec<u8>) = ((100..102).collect(), (0..5).collect());
        let head: Vec<&[u8]> = h.iter().map(std::slice::from_ref).collect();
        let symbols: Vec<&[u8]> = s.iter().map(std::slice::from_ref).collect();
        let plan: Vec<u8> = send_plan(7, 3, &head, &symbols).iter().map(|d| d[0]).collect();
        assert_eq!(plan, [100, 101, 0, 1, 2, 100, 101, 3, 4, 0, 100, 101, 1]);
    }

    #[test]
    fn the_links_loss_is_read_every_32_packets_and_smoothed() {
        let mut l = LinkLoss::new();
        assert_eq!(l.update(10, 5), PRIOR_LOSS, "too few packets for a reading");
        assert_eq!(l.update(100, 50), 0.5 * PRIOR_LOSS + 0.25);
        assert_eq!(l.update(132, 50), 0.5 * (0.5 * PRIOR_LOSS + 0.25));
        let before = l.loss;
        assert_eq!(l.update(200, 300), 0.5 * before + 0.5, "more lost than sent reads as all lost");
    }

    #[tokio::test]
    async fn only_the_bridges_datagrams_are_taken_and_its_silence_ends_the_feed() {
        let localhost: IpAddr = Ipv4Addr::LOCALHOST.into();
        let socket = hubcast_transport::udp::bind_any_port(localhost, RECEIVE_BUFFER).unwrap();
        let to = socket.local_addr().unwrap();
        let bridge = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let (events, mut rx) = mpsc::channel(8);
        let silence = (Duration::from_millis(300), Duration::from_millis(300));
        // Another address (10.x is not this host's): its datagrams are
        // dropped, and do not count as the bridge's.
        bridge.send_to(&[7; 40], to).await.unwrap();
        let stranger = IpAddr::from([10, 9, 8, 7]);
        let loss = AtomicU8::new(NUDGE_UNKNOWN);
        let why = read_udp(&socket, stranger, silence, &loss, &events, |d| d).await;
        assert!(matches!(&why, Err(w) if w.contains("NAT")), "{why:?}");
        assert!(rx.try_recv().is_err(), "a stranger's datagram reached the loop");

        // From the bridge: handed on, batched; heartbeats only keep it alive.
        let read = read_udp(&socket, localhost, silence, &loss, &events, |d| d);
        tokio::pin!(read);
        for d in [&[1u8; 40][..], &[0], &[2; 40]] {
            bridge.send_to(d, to).await.unwrap();
        }
        let mut taken = Vec::new();
        while taken.len() < 2 {
            tokio::select! {
                why = &mut read => panic!("ended: {why:?}"),
                d = rx.recv() => taken.extend(d.unwrap()),
            }
        }
        assert_eq!(taken, [vec![1; 40], vec![2; 40]]);
        // Then nothing: the bridge went silent.
        let why = read.await;
        assert!(matches!(&why, Ok(w) if w.contains("silent")), "{why:?}");
        assert!(rx.try_recv().is_err(), "the heartbeat reached the loop");
    }

    /// The feed's sizing of a chunk of `k` once the bridge has the report
    /// `percent` (waits for it, up to 20 s).
    async fn sized_once_reported(feed: &mut UdpFeed, percent: u8, k: u32) -> (u32, f64) {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while feed.loss() != f64::from(percent) / 100.0 {
            assert!(std::time::Instant::now() < deadline, "no report of {percent}% arrived");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        feed.sizing(k)
    }

    /// A hub's QUIC connection to a bridge on loopback (the hub's endpoint,
    /// kept alive by the caller, and its side), and the bridge's UDP feed
    /// on it.
    async fn subscription() -> (hubcast_transport::quic::NodeEndpoint, quinn::Connection, UdpFeed) {
        use hubcast_transport::quic::NodeEndpoint;
        let key = || hubcast_keys::NodeKey::generate(&mut rand::rngs::OsRng);
        let (bridge_key, hub_key) = (key(), key());
        let bridge = NodeEndpoint::bind("127.0.0.1:0".parse().unwrap(), &bridge_key).unwrap();
        let hub = NodeEndpoint::bind("127.0.0.1:0".parse().unwrap(), &hub_key).unwrap();
        let addr = bridge.local_addr().unwrap();
        let accepted = tokio::spawn(async move { bridge.accept().await.unwrap().await.unwrap() });
        let to_bridge = hub.connect(addr, bridge_key.id()).unwrap().await.unwrap();
        let feed = UdpFeed::open(accepted.await.unwrap(), 9).unwrap();
        (hub, to_bridge, feed)
    }

    /// A subscriber that stops nudging (it left; its connection still
    /// open) ends its feed: the bridge stops reading its reports, and the
    /// subscription with them.
    #[tokio::test]
    async fn a_subscriber_that_stops_nudging_ends_its_feed() {
        let (_hub, to_bridge, feed) = subscription().await;
        let reports = tokio::spawn(feed.read_reports());
        let loss = Arc::new(AtomicU8::new(NUDGE_UNKNOWN));
        let conn = to_bridge.clone();
        let nudging = tokio::spawn(async move { super::super::desert::nudge(&conn, &loss).await });
        tokio::time::sleep(SUBSCRIBER_SILENCE + Duration::from_secs(1)).await;
        assert!(!reports.is_finished(), "a nudging subscriber's feed goes on");
        nudging.abort();
        tokio::time::timeout(Duration::from_secs(20), reports)
            .await
            .expect("the feed of a silent subscriber ends")
            .unwrap();
        assert!(to_bridge.close_reason().is_none(), "though its connection is still open");
    }

    /// The subscriber's nudges carry its loss; the bridge sizes the feed by
    /// the last report, and keeps it through nudges that say "unknown".
    #[tokio::test]
    async fn the_feed_is_sized_for_the_loss_the_subscriber_reports_in_its_nudges() {
        let (_hub, to_bridge, mut feed) = subscription().await;
        tokio::spawn(feed.read_reports());
        let loss = Arc::new(AtomicU8::new(NUDGE_UNKNOWN));
        let nudging = loss.clone();
        let hub_conn = to_bridge.clone();
        tokio::spawn(async move { super::super::desert::nudge(&to_bridge, &nudging).await });

        let k = 820;
        loss.store(40, Relaxed);
        let (sends, at) = sized_once_reported(&mut feed, 40, k).await;
        let n = wire::n_max(k);
        assert_eq!(
            (sends, at),
            (feed_sends(k, n, 0.4).min(n), 0.4),
            "ESIs read: all N_max, a second copy due"
        );
        loss.store(5, Relaxed);
        let (sends, _) = sized_once_reported(&mut feed, 5, k).await;
        assert_eq!(sends, feed_sends(k, n, 0.05), "the last report counts");
        assert!(sends < n);
        loss.store(NUDGE_UNKNOWN, Relaxed);
        tokio::time::sleep(NUDGE_EVERY * 3).await;
        assert_eq!(feed.loss(), 0.05, "an unknown loss keeps the last report");

        // An ask to feed chunks again, beside the nudges: queued in order,
        // and the nudges' loss is untouched.
        let asked = [(ObjectId([7; 32]), 3), (ObjectId([7; 32]), 9)];
        for ask in refeed_asks(&asked) {
            hub_conn.send_datagram(ask).unwrap();
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let mut again = Vec::new();
        while again.len() < 2 {
            assert!(std::time::Instant::now() < deadline, "the asks did not arrive: {again:?}");
            again.extend(feed.take_again());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(again, asked, "in order");
        assert_eq!(feed.loss(), 0.05);
    }

    #[test]
    fn an_ask_to_feed_again_names_its_chunks_and_a_malformed_one_names_none() {
        let chunks: Vec<(ObjectId, u32)> =
            (0..40u8).map(|i| (ObjectId([i; 32]), u32::from(i) << 20)).collect();
        let asks = refeed_asks(&chunks);
        assert_eq!(asks.len(), 2, "{REFEED_PER_ASK} a datagram");
        assert!(asks.iter().all(|a| a.len() <= 1 + REFEED_PER_ASK * REFEED_ENTRY && a.len() < 1200));
        let back: Vec<(ObjectId, u32)> = asks.iter().flat_map(|a| parse_refeed(a)).collect();
        assert_eq!(back, chunks);
        let one = refeed_asks(&chunks[..1]).remove(0);
        for bad in [&one[..one.len() - 1], &one[..1], &[50][..], &[], &[REFEED; 1 + 37][..]] {
            assert!(parse_refeed(bad).is_empty(), "{bad:?}");
        }
        let mut too_many = refeed_asks(&chunks[..REFEED_PER_ASK]).remove(0).to_vec();
        too_many.extend_from_slice(&one[1..]);
        assert!(parse_refeed(&too_many).is_empty(), "more than {REFEED_PER_ASK}");
        // Queued once each (the ask goes twice), the oldest dropped past the bound.
        let mut again = VecDeque::new();
        queue_again(&mut again, chunks[..2].to_vec());
        queue_again(&mut again, chunks[..2].to_vec());
        assert_eq!(again, chunks[..2].to_vec());
        let many: Vec<(ObjectId, u32)> = (0..70u32).map(|i| (ObjectId([1; 32]), i)).collect();
        queue_again(&mut again, many.clone());
        assert_eq!(again.len(), REFEED_QUEUE);
        assert_eq!(again.back(), many.last());
    }

    #[test]
    fn a_v4_mapped_address_is_the_v4_one() {
        let v4: IpAddr = "10.0.0.7".parse().unwrap();
        let mapped: IpAddr = "::ffff:10.0.0.7".parse().unwrap();
        assert_eq!(unmapped(mapped), v4);
        assert_eq!(unmapped(v4), v4);
    }
}
