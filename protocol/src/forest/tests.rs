use super::*;

fn refusals(n: &mut ForestNode<u32>) -> Vec<(u32, Refusal)> {
    std::iter::from_fn(|| n.poll_transmit())
        .filter_map(|(to, m)| match m {
            Msg::Refuse { why, .. } => Some((to, why)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_hub_claiming_a_place_it_does_not_hold_gets_a_typed_refusal_and_changes_nothing() {
    let now = Instant::now();
    let cfg = ForestConfig::new(4);
    let mut root = ForestNode::new_root(0u32, cfg);
    root.handle_message(now, 7, Msg::Search { tree: 0, joiner: 7, interior: true, down: false });
    assert_eq!(root.children(0).len(), 1);
    let _ = refusals(&mut root);

    let up = UpdateInfo::Up { interior: 9, free: 9, spare: 9, room: 0, give: 0, attached: true, epoch: 1 };
    root.handle_message(now, 8, Msg::Update { tree: 0, info: up });
    root.handle_message(now, 8, Msg::Replace { tree: 1, dead: 5, interior: true });
    root.handle_message(now, 8, Msg::Search { tree: 9, joiner: 8, interior: false, down: true });
    let got = refusals(&mut root);
    assert!(got.contains(&(8, Refusal::NotAChild)), "{got:?}");
    assert!(got.contains(&(8, Refusal::BadTree)), "{got:?}");
    assert_eq!(root.children(0).iter().map(|c| c.id).collect::<Vec<_>>(), [7]);

    let mut hub = ForestNode::new(7u32, 0, 0, cfg);
    hub.handle_message(now, 0, Msg::Direct { tree: 0, parent: 0, grandparent: None });
    assert_eq!(hub.parent(0), Some(0));
    let _ = refusals(&mut hub);
    // Another hub says it is the parent, or directs it elsewhere.
    hub.handle_message(
        now,
        3,
        Msg::Update { tree: 0, info: UpdateInfo::Down { grandparent: None, heir: Some(3) } },
    );
    hub.handle_message(now, 3, Msg::Direct { tree: 0, parent: 4, grandparent: None });
    let got = refusals(&mut hub);
    assert!(got.contains(&(3, Refusal::NotYourParent)) && got.contains(&(3, Refusal::Loop)), "{got:?}");
    assert_eq!(hub.parent(0), Some(0));
}

#[test]
fn the_root_gives_out_the_tree_with_the_fewest_interior_hubs_as_its_updates_count_them() {
    let now = Instant::now();
    let cfg = ForestConfig::new(3);
    let mut root = ForestNode::new_root(0u32, cfg);
    let welcome = |root: &mut ForestNode<u32>, hub: u32| {
        root.handle_message(now, hub, Msg::Join);
        std::iter::from_fn(|| root.poll_transmit())
            .find_map(|(to, m)| match m {
                Msg::Welcome { tree, .. } if to == hub => Some(tree),
                _ => None,
            })
            .expect("a welcome")
    };
    assert_eq!([1, 2, 3].map(|h| welcome(&mut root, h)), [0, 1, 2], "round robin while nothing is counted");
    // Tree 0's hub arrives and reports; trees 1 and 2 report two interior
    // hubs each (one placed, one more below): tree 0 is the emptiest.
    for (tree, hub, interior) in [(0, 1, 1), (1, 2, 2), (2, 3, 2)] {
        root.handle_message(now, hub, Msg::Search { tree, joiner: hub, interior: true, down: true });
        let up = UpdateInfo::Up { interior, free: 4, spare: 1, room: 0, give: 0, attached: true, epoch: 1 };
        root.handle_message(now, hub, Msg::Update { tree, info: up });
    }
    assert_eq!(welcome(&mut root, 4), 0);
    // Tree 1's hubs fail: its updates stop counting them.
    root.handle_child_lost(now, 1, 2);
    assert_eq!(welcome(&mut root, 5), 1);
}

#[test]
fn notices_that_cross_on_the_way_are_ordered_by_epoch() {
    let now = Instant::now();
    let cfg = ForestConfig::new(4);
    let mut root = ForestNode::new_root(0u32, cfg);
    root.handle_message(now, 7, Msg::Search { tree: 1, joiner: 7, interior: false, down: true });
    let up = |attached, epoch| Msg::Update {
        tree: 1,
        info: UpdateInfo::Up { interior: 0, free: 0, spare: 0, room: 0, give: 0, attached, epoch },
    };
    root.handle_message(now, 7, up(true, 1));
    // It left at epoch 2; its update of epoch 1, overtaken, changes nothing.
    root.handle_message(now, 7, up(false, 2));
    root.handle_message(now, 7, up(true, 1));
    assert!(root.children(1).is_empty());
    assert!(refusals(&mut root).is_empty(), "a stale update is no claim to refuse");
    // Back at epoch 3 (placed here again; the leave crossed it): a child.
    root.handle_message(now, 7, up(true, 3));
    assert_eq!(root.children(1).iter().map(|c| c.id).collect::<Vec<_>>(), [7]);
    // A late leave from epoch 2 does not take it away.
    root.handle_message(now, 7, up(false, 2));
    assert_eq!(root.children(1).len(), 1);
}

#[test]
fn an_heir_fills_the_bubble_and_its_siblings_hang_below_it() {
    let now = Instant::now();
    let cfg = ForestConfig::new(2);
    // Parent 1 (proper tree 0) under the root, with children 2 and 3
    // (both interior in tree 0); the heir is 2.
    let mut root = ForestNode::new_root(0u32, cfg);
    root.handle_message(now, 1, Msg::Search { tree: 0, joiner: 1, interior: true, down: true });
    let mut two = ForestNode::new(2u32, 0, 0, cfg);
    two.handle_message(now, 1, Msg::Direct { tree: 0, parent: 1, grandparent: Some(0) });
    two.handle_message(
        now,
        1,
        Msg::Update { tree: 0, info: UpdateInfo::Down { grandparent: Some(0), heir: Some(2) } },
    );
    while two.poll_transmit().is_some() {}
    // 1 fails: 2 asks the root to take it in 1's place.
    root.handle_child_lost(now, 0, 1);
    two.handle_parent_lost(now, 0, 1);
    let (to, msg) = two.poll_transmit().unwrap();
    assert_eq!((to, &msg), (0, &Msg::Replace { tree: 0, dead: 1, interior: true }));
    root.handle_message(now, 2, msg);
    assert_eq!(root.children(0).iter().map(|c| c.id).collect::<Vec<_>>(), [2]);
    // 3 asks late, at the root: sent on to the heir.
    root.handle_message(now, 3, Msg::Replace { tree: 0, dead: 1, interior: true });
    let sent: Vec<_> = std::iter::from_fn(|| root.poll_transmit()).collect();
    assert!(
        sent.contains(&(2, Msg::TakeOn { tree: 0, child: 3, interior: true, dead: Some(1) })),
        "{sent:?}"
    );
}

fn drain(n: &mut ForestNode<u32>) -> Vec<(u32, Msg<u32>)> {
    std::iter::from_fn(|| n.poll_transmit()).collect()
}

fn place(n: &mut ForestNode<u32>, now: Instant, parent: u32, grandparent: u32, heir: u32) {
    n.handle_message(now, parent, Msg::Direct { tree: 0, parent, grandparent: Some(grandparent) });
    let down = UpdateInfo::Down { grandparent: Some(grandparent), heir: Some(heir) };
    n.handle_message(now, parent, Msg::Update { tree: 0, info: down });
}

#[test]
fn an_orphan_asks_the_heir_its_parent_named_and_a_stale_heir_sends_it_to_the_grandparent() {
    let now = Instant::now();
    let cfg = ForestConfig::new(4);
    // Hub 5 hangs below 1 (below the root, 0); 1 named 3 the heir.
    let mut orphan = ForestNode::new(5u32, 0, 0, cfg);
    place(&mut orphan, now, 1, 0, 3);
    // 5 takes an interior child of its own, 9: 9 is 5's successor, and
    // not the heir of 1's children.
    orphan.handle_message(now, 9, Msg::Search { tree: 0, joiner: 9, interior: true, down: true });
    assert_eq!(orphan.children(0).len(), 1);
    drain(&mut orphan);
    orphan.handle_parent_lost(now, 0, 1);
    let sent = drain(&mut orphan);
    assert_eq!(sent, [(3, Msg::TakeOn { tree: 0, child: 5, interior: true, dead: Some(1) })]);

    // 3 has moved on since (it hangs below 7): taking 5 on could close a
    // loop, so it refuses, and takes no one.
    let mut stale = ForestNode::new(3u32, 0, 0, cfg);
    place(&mut stale, now, 7, 0, 3);
    drain(&mut stale);
    stale.handle_message(now, 5, sent[0].1.clone());
    // Nor does a hub that is not its parent hand it children.
    stale.handle_message(now, 8, Msg::TakeOn { tree: 0, child: 6, interior: false, dead: None });
    assert_eq!(refusals(&mut stale), [(5, Refusal::NotHeir), (8, Refusal::NotYourParent)]);
    assert!(stale.children(0).is_empty());

    // The orphan asks its grandparent for 1's place instead.
    orphan.handle_message(now, 3, Msg::Refuse { tree: 0, why: Refusal::NotHeir });
    assert_eq!(drain(&mut orphan), [(0, Msg::Replace { tree: 0, dead: 1, interior: true })]);
}

#[test]
fn an_heir_over_capacity_hands_its_older_interior_children_down_under_the_oldest() {
    let now = Instant::now();
    // Fanout 2, slack 1: three children at most.
    let cfg = ForestConfig::new(2);
    let mut heir = ForestNode::new(2u32, 0, 0, cfg);
    place(&mut heir, now, 1, 0, 2);
    for c in [10, 11, 12] {
        heir.handle_message(now, 1, Msg::TakeOn { tree: 0, child: c, interior: true, dead: None });
        let up =
            UpdateInfo::Up { interior: 1, free: 2, spare: 1, room: 0, give: 0, attached: true, epoch: 1 };
        heir.handle_message(now, c, Msg::Update { tree: 0, info: up });
    }
    assert_eq!(heir.children(0).len(), 3);
    // 1 fails; its heir asks the root for the place, and a sibling, 3,
    // asks the heir to take it on: four children, one too many.
    heir.handle_parent_lost(now, 0, 1);
    heir.handle_message(now, 0, Msg::Direct { tree: 0, parent: 0, grandparent: None });
    drain(&mut heir);
    heir.handle_message(now, 3, Msg::TakeOn { tree: 0, child: 3, interior: true, dead: Some(1) });
    let sent = drain(&mut heir);
    // 11 goes back to its depth, under 10 (both moved up with the heir);
    // it is not dropped, so it never goes without a parent.
    assert!(sent.contains(&(10, Msg::TakeOn { tree: 0, child: 11, interior: true, dead: None })), "{sent:?}");
    assert!(!sent.iter().any(|(to, m)| *to == 11 && matches!(m, Msg::Refuse { .. })), "{sent:?}");
    let kids: Vec<u32> = heir.children(0).iter().map(|c| c.id).collect();
    assert_eq!(kids, [10, 12, 3]);
    // Its update from before the move is no claim to refuse.
    let up = UpdateInfo::Up { interior: 1, free: 2, spare: 1, room: 0, give: 0, attached: true, epoch: 1 };
    heir.handle_message(now, 11, Msg::Update { tree: 0, info: up });
    assert!(refusals(&mut heir).is_empty());
    // Were the move never to happen, 11 is told to search anew.
    heir.handle_timeout(now + ORPHAN_RETRY);
    assert!(refusals(&mut heir).contains(&(11, Refusal::NotAChild)));
}

#[test]
fn a_hub_short_of_children_asks_for_leaves_and_one_with_a_leaf_to_spare_gives_it() {
    let now = Instant::now();
    let cfg = ForestConfig::new(4);
    // A leaf child, placed and confirmed.
    let leaf = |n: &mut ForestNode<u32>, c: u32| {
        n.handle_message(now, c, Msg::Search { tree: 0, joiner: c, interior: false, down: true });
        let up =
            UpdateInfo::Up { interior: 0, free: 0, spare: 0, room: 0, give: 0, attached: true, epoch: 1 };
        n.handle_message(now, c, Msg::Update { tree: 0, info: up });
    };
    // Hub 5, interior in tree 0 below 1, has one child of four: it would
    // send one stripe and take four.
    let mut needy = ForestNode::new(5u32, 0, 0, cfg);
    place(&mut needy, now, 1, 0, 5);
    leaf(&mut needy, 20);
    drain(&mut needy);
    // A hub just short waits a while (newcomers may fill the places)...
    needy.handle_timeout(now);
    assert!(drain(&mut needy).is_empty());
    // ...then asks, up its tree.
    needy.handle_timeout(now + ORPHAN_RETRY);
    assert_eq!(drain(&mut needy), [(1, Msg::Want { tree: 0, needy: 5, down: false })]);

    // Hub 7 has four leaf children: it can spare one, and says so up.
    let mut donor = ForestNode::new(7u32, 0, 0, cfg);
    place(&mut donor, now, 1, 0, 7);
    for c in 30..34 {
        leaf(&mut donor, c);
    }
    let mut reported = drain(&mut donor).into_iter().filter_map(|(to, m)| match m {
        Msg::Update { info: UpdateInfo::Up { give, .. }, .. } if to == 1 => Some(give),
        _ => None,
    });
    assert_eq!(reported.next_back(), Some(1));
    donor.handle_message(now, 1, Msg::Want { tree: 0, needy: 5, down: true });
    let sent = drain(&mut donor);
    assert!(sent.contains(&(5, Msg::Give { tree: 0, leaf: 30 })), "{sent:?}");
    // Until that leaf has moved it spares no other, and keeps it listed.
    donor.handle_message(now, 1, Msg::Want { tree: 0, needy: 9, down: true });
    assert!(!drain(&mut donor).iter().any(|(_, m)| matches!(m, Msg::Give { .. })));
    assert_eq!(donor.children(0).len(), 4);

    // The needy hub takes the leaf on, and, two short still, asks again.
    needy.handle_message(now, 7, Msg::Give { tree: 0, leaf: 30 });
    let sent = drain(&mut needy);
    assert!(sent.contains(&(30, Msg::Direct { tree: 0, parent: 5, grandparent: Some(1) })), "{sent:?}");
    assert!(sent.contains(&(1, Msg::Want { tree: 0, needy: 5, down: false })), "{sent:?}");
    assert_eq!(needy.children(0).len(), 2);
    // The leaf says it has left the donor.
    let leave =
        UpdateInfo::Up { interior: 0, free: 0, spare: 0, room: 0, give: 0, attached: false, epoch: 2 };
    donor.handle_message(now, 30, Msg::Update { tree: 0, info: leave });
    assert_eq!(donor.children(0).len(), 3);
    // A hub that is not short takes no gift.
    donor.handle_message(now, 5, Msg::Give { tree: 0, leaf: 40 });
    donor.handle_message(now, 5, Msg::Give { tree: 0, leaf: 41 });
    assert_eq!(refusals(&mut donor), [(5, Refusal::Full)]);
}

/// One second, for the stripe watchdog's times.
const S: Duration = Duration::from_secs(1);

#[test]
fn a_stripe_silent_while_others_flow_is_starved_and_a_quiet_channel_is_not() {
    let now = 100 * S;
    // Tree 1 silent for 10 s while tree 0 brought data a second ago.
    assert_eq!(starved(&[Some(now - S), Some(now - 10 * S), Some(now - S)], now), [1]);
    // 9 s is within a repair's time.
    assert!(starved(&[Some(now - S), Some(now - 9 * S)], now).is_empty());
    // Every stripe silent: the channel is quiet (no live stream), not broken.
    assert!(starved(&[Some(now - 30 * S), Some(now - 30 * S)], now).is_empty());
    // No parent in a tree: nothing to leave there.
    assert_eq!(starved(&[Some(now), None, Some(now - 20 * S)], now), [2]);
}
