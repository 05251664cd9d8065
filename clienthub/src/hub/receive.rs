//! The receive loop: multicast in batches, the machine's timers, the peer
//! side's and the store worker's reports, each handed to the [`Hub`]
//! machine through [`Loop`], until the hub stops.

use super::*;

/// Wait for the next item of an optional channel; never, when there is none.
async fn recv_opt<T>(rx: Option<&mut mpsc::Receiver<T>>) -> Option<T> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn readable_opt(socket: Option<&tokio::net::UdpSocket>) -> std::io::Result<()> {
    match socket {
        Some(s) => s.readable().await,
        None => std::future::pending().await,
    }
}

pub(super) async fn receive_loop(
    lp: &mut Loop<'_>,
    socket: Option<&tokio::net::UdpSocket>,
    unstored: &mut mpsc::Receiver<Unstored>,
    cancel: &CancellationToken,
) -> Result<(), HubError> {
    let cfg = lp.cfg;
    let mut rng = match cfg.loss_seed {
        Some(seed) => rand::rngs::StdRng::seed_from_u64(seed),
        None => rand::rngs::StdRng::from_entropy(),
    };
    let mut batch = match socket {
        Some(s) => Some(BatchRecv::new(s).map_err(|source| HubError::Recv { group: cfg.group, source })?),
        None => None,
    };
    let mut narrow = cfg.simulate_narrow.map(|r| narrow::Narrow::new(r.bytes_per_sec()));
    let (start, _) = clock();
    let mut last_rx = start;
    let mut last_drops = DropCounters::default();
    let mut last_drop_report = start;
    // The socket's kernel drops at the last warning and at the last look.
    let mut kernel_drops = (0u64, 0u64);
    let mut report_tick = tokio::time::interval(REPORT_EVERY);
    let mut feed_tick = tokio::time::interval(FEED_MODE_EVERY);
    let mut scrub_tick = tokio::time::interval(SCRUB_TICK);
    loop {
        let timeout = tokio::time::Instant::from_std(lp.hub.poll_timeout());
        let (done_rx, tracker_rx, partial_rx, control, feed_rx, forest_rx) = match lp.peers.as_mut() {
            Some(p) => (
                Some(&mut p.done_rx),
                Some(&mut p.tracker_rx),
                Some(&mut p.partial_rx),
                Some(&p.control),
                Some(&mut p.feed_rx),
                p.forest_rx.as_mut(),
            ),
            None => (None, None, None, None, None, None),
        };
        tokio::select! {
            r = readable_opt(socket) => {
                r.map_err(|source| HubError::Recv { group: cfg.group, source })?;
                let (Some(socket), Some(batch)) = (socket, batch.as_mut()) else { continue };
                let (now, unix_ms) = clock();
                let mut heard = false;
                // Each call takes up to quinn-udp's BATCH_SIZE messages
                // (recvmmsg), each one datagram or several (GRO).
                for _ in 0..RECV_CALLS {
                    let datagrams = match batch.try_recv(socket) {
                        Ok(d) => d,
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                        Err(source) => return Err(HubError::Recv { group: cfg.group, source }),
                    };
                    for d in datagrams {
                        lp.received += 1;
                        heard = true;
                        if cfg.simulate_loss > 0.0 && rng.gen_bool(cfg.simulate_loss) {
                            lp.simulated += 1;
                            continue;
                        }
                        if narrow.as_mut().is_some_and(|b| !b.passes(now, d.len())) {
                            lp.simulated += 1;
                            continue;
                        }
                        lp.hub.handle_input(now, unix_ms, Input::Multicast(d));
                    }
                }
                // Outputs after the whole batch: the receiver checks digests many at a time.
                if !lp.carry_out(now, unix_ms).await {
                    return Ok(());
                }
                if heard {
                    last_rx = now;
                    lp.silence_told = false;
                }
            }
            _ = tokio::time::sleep_until(timeout) => {
                let (_, unix_ms) = clock();
                if !lp.input(Input::Timer).await || !lp.live_tick(unix_ms).await {
                    return Ok(());
                }
            }
            Some(done) = recv_opt(done_rx) => {
                let frames: Vec<&[u8]> = done.result.as_ref().map(|d| d.iter().collect()).unwrap_or_default();
                let answer = match &done.result {
                    Ok(_) => Ok(frames.as_slice()),
                    Err(outcome) => Err(*outcome),
                };
                if !lp.input(Input::Fetched { id: done.id, answer }).await {
                    return Ok(());
                }
            }
            Some(answer) = recv_opt(tracker_rx) => {
                let go_on = match answer {
                    TrackerAnswer::Listed { object_id, index, hubs } => {
                        if let Err(e) = &hubs {
                            debug!(object = %object_id, chunk = index, "tracker lookup failed ({e:?}); again later");
                        }
                        lp.input(Input::Listed { object_id, index, hubs: hubs.as_deref().ok() }).await
                    }
                    TrackerAnswer::Statements(datagrams) => {
                        let datagrams: Vec<&[u8]> = datagrams.iter().map(Vec::as_slice).collect();
                        lp.input(Input::Statements(&datagrams)).await
                    }
                };
                if !go_on {
                    return Ok(());
                }
            }
            Some(event) = recv_opt(feed_rx) => {
                if !lp.on_feed_event(event).await {
                    return Ok(());
                }
            }
            Some(event) = recv_opt(forest_rx) => {
                let go_on = match event {
                    ForestIn::Msg(from, msg) => lp.input(Input::Forest { from, msg }).await,
                    ForestIn::ChildGone(tree, child) => lp.input(Input::ChildGone { tree, child }).await,
                    ForestIn::Stripe(tree, parent, datagrams) => {
                        let datagrams: Vec<&[u8]> = datagrams.iter().map(Vec::as_slice).collect();
                        lp.input(Input::Stripe { tree, parent, datagrams: &datagrams }).await
                    }
                    ForestIn::StripeEnded(tree, parent, why) => {
                        lp.input(Input::StripeEnded { tree, parent, why: &why }).await
                    }
                    ForestIn::Hub(pick) => lp.input(Input::ForestHub(pick)).await,
                };
                if !go_on {
                    return Ok(());
                }
            }
            Some(ask) = recv_opt(partial_rx) => {
                let _ = ask.reply.send(answer_partial(&ask.req, lp.hub.receiver()));
            }
            r = readable_opt(control) => {
                // Peers' announcements, and the origin's repair.
                let mut repair = Vec::new();
                if r.is_ok() {
                    let mut abuf = [0u8; CONTROL_BUF];
                    while let Some(Ok((n, from))) = lp.peers.as_ref().map(|p| p.control.try_recv_from(&mut abuf)) {
                        if wire::decode_header(&abuf[..n]).is_ok() {
                            repair.push(abuf[..n].to_vec());
                        } else if !lp.input(Input::Announcement { from, datagram: &abuf[..n] }).await {
                            return Ok(());
                        }
                        if repair.len() >= RECV_BATCH {
                            break;
                        }
                    }
                }
                let frames: Vec<&[u8]> = repair.iter().map(Vec::as_slice).collect();
                if !frames.is_empty() && !lp.input(Input::Origin(&frames)).await {
                    return Ok(());
                }
            }
            _ = feed_tick.tick() => {
                let (now, _) = clock();
                lp.update_feed_mode(now);
            }
            _ = report_tick.tick() => {
                let (now, _) = clock();
                // The kernel dropped datagrams for a full socket buffer: the
                // hub does not keep up, and under --rate auto says so.
                if let Some(drops) = socket.and_then(hubcast_transport::udp::kernel_drops) {
                    if drops > kernel_drops.1 {
                        lp.hub.handle_overflow();
                    }
                    kernel_drops.1 = drops;
                    lp.status.record_kernel_drops(drops);
                }
                lp.record();
                lp.status.tick(now);
                let fed = lp.hub.feeding().is_some();
                let silent = now.saturating_duration_since(last_rx);
                if !lp.silence_told && !fed && !cfg.no_multicast && silent >= Duration::from_secs(cfg.silence_warning_secs) {
                    lp.silence_told = true;
                    warn!("no multicast received on {} for {} s: is the broadcaster running and the interface right? try --iface (now {})",
                        cfg.group, silent.as_secs(), cfg.iface);
                }
                lp.warn_foreign_channel(now);
                if now.saturating_duration_since(last_drop_report) >= DROP_REPORT_EVERY {
                    if kernel_drops.1 > kernel_drops.0 {
                        warn!(dropped = kernel_drops.1 - kernel_drops.0, "the kernel dropped multicast datagrams in the last {} s for a full receive buffer: this hub's CPU did not keep up (busy with other work?), or the socket buffer is small (raise net.core.rmem_max to 8 MiB or more)", DROP_REPORT_EVERY.as_secs());
                    }
                    kernel_drops.0 = kernel_drops.1;
                    report_drops(&last_drops, lp.hub.receiver().drops());
                    last_drops = lp.hub.receiver().drops().clone();
                    last_drop_report = now;
                }
            }
            Some(u) = unstored.recv() => {
                let one;
                let input = match u {
                    Unstored::Failed(object_id, index) => Input::StoreFailed { object_id, index },
                    Unstored::Lost(object_id, index) => Input::ChunkLost { object_id, index },
                    Unstored::Evicted(id) => {
                        one = [id];
                        Input::Unwanted(&one)
                    }
                    Unstored::Wanted(id) => {
                        one = [id];
                        Input::Wanted(&one)
                    }
                    Unstored::Chosen(ref ids) => Input::Choose(ids),
                    Unstored::Awaited(object_id, index) => Input::Awaited { object_id, index },
                };
                if !lp.input(input).await {
                    return Ok(());
                }
            }
            _ = scrub_tick.tick() => {
                // Skipped when the worker is busy: the scrub is background work.
                let _ = lp.store.try_send(StoreJob::Scrub(clock().0));
            }
            _ = cancel.cancelled() => break,
        }
    }
    lp.record();
    lp.status.tick(clock().0);
    Ok(())
}
