//! The feedback datagram (kind 5): the echo of loss reports and, under
//! `--rate auto`, the rate and the verdicts heard (`crate::feedback`,
//! `crate::rate`). Layout in the table at the top of this module's parent.

use super::*;

pub(super) fn decode_feedback(r: &mut Reader<'_>) -> Result<Signed<Feedback>, WireError> {
    let (cert, seq, expiry) = decode_signed_head(r)?;
    let round = r.u32()?;
    let round_ms = r.u16()?;
    let worst = match r.u8()? {
        NO_REPORT => None,
        w @ 0..=100 => Some(w),
        _ => return Err(WireError::OutOfRange),
    };
    let fec_permille = r.u16()?;
    if round_ms == 0 || fec_permille > MAX_FEC_PERMILLE {
        return Err(WireError::OutOfRange);
    }
    let (rate_kbit, heard) = if r.remaining() == SIGNATURE_LEN {
        (None, crate::rate::Verdict::default())
    } else {
        let rate = r.u32()?;
        let heard = crate::rate::Verdict::from_bits(r.u8()?).ok_or(WireError::OutOfRange)?;
        ((rate > 0).then_some(rate), heard)
    };
    let echo = crate::feedback::Echo { round, round_ms, worst, fec_permille, rate_kbit, heard };
    finish_signed(r, Feedback { seq, expiry, echo }, cert)
}

/// The bytes a feedback datagram's signature covers.
pub fn feedback_signed_bytes(f: &Feedback, cert: &Certificate, channel_tag: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(FEEDBACK_LEN);
    put_header(&mut out, Kind::Feedback, channel_tag);
    put_signed_head(&mut out, cert, f.seq, f.expiry);
    out.extend_from_slice(&f.echo.round.to_be_bytes());
    out.extend_from_slice(&f.echo.round_ms.to_be_bytes());
    out.push(f.echo.worst.map_or(NO_REPORT, |w| w.min(100)));
    out.extend_from_slice(&f.echo.fec_permille.min(MAX_FEC_PERMILLE).to_be_bytes());
    out.extend_from_slice(&f.echo.rate_kbit.unwrap_or(0).to_be_bytes());
    out.push(f.echo.heard.bits());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feedback_round_trips_and_out_of_range_fields_are_refused() {
        use crate::feedback::Echo;
        let keys = hubcast_keys::ChannelKeys::generate(&mut rand::rngs::OsRng, 1000, 10);
        let cert = keys.signer.cert.clone();
        // A datagram as signed, with a zero signature (not checked here).
        let datagram = |f: &Feedback| {
            let mut d = feedback_signed_bytes(f, &cert, 9);
            d.extend_from_slice(&[0u8; SIGNATURE_LEN]);
            d
        };
        for worst in [None, Some(0), Some(37), Some(100)] {
            let heard = crate::rate::Verdict { behind: worst.is_some(), congested: true };
            let rate_kbit = worst.map(|_| 250_000);
            let echo = Echo { round: 7, round_ms: 2000, worst, fec_permille: 450, rate_kbit, heard };
            let f = Feedback { seq: 99, expiry: 5000, echo };
            let d = datagram(&f);
            assert_eq!(d.len(), FEEDBACK_LEN);
            let Ok((h, Datagram::Feedback(got))) = decode(&d) else { panic!("a feedback datagram") };
            assert_eq!((h.kind, got.body), (Kind::Feedback, f));
        }
        let f = Feedback {
            seq: 1,
            expiry: 2,
            echo: Echo {
                round: 0,
                round_ms: 1,
                worst: None,
                fec_permille: 0,
                rate_kbit: None,
                heard: crate::rate::Verdict::default(),
            },
        };
        let at_end = |d: &mut Vec<u8>, back: usize, bytes: &[u8]| {
            let at = d.len() - SIGNATURE_LEN - back;
            d[at..at + bytes.len()].copy_from_slice(bytes);
        };
        for (back, bytes) in [
            (8, &[101u8][..]),
            (7, &1001u16.to_be_bytes()[..]),
            (10, &0u16.to_be_bytes()[..]),
            (1, &[4u8][..]),
        ] {
            let mut d = datagram(&f);
            at_end(&mut d, back, bytes);
            assert_eq!(
                decode(&d),
                Err(WireError::OutOfRange),
                "{back} bytes before the signature: {bytes:?}"
            );
        }
        let mut d = datagram(&f);
        d.push(0);
        assert_eq!(decode(&d), Err(WireError::Oversized));
        // A broadcaster of before 2026-12-06: no rate, no verdicts.
        let mut old = datagram(&f);
        old.drain(FEEDBACK_V1_LEN - SIGNATURE_LEN..FEEDBACK_LEN - SIGNATURE_LEN);
        assert_eq!(old.len(), FEEDBACK_V1_LEN);
        let Ok((_, Datagram::Feedback(got))) = decode(&old) else { panic!("an old feedback datagram") };
        assert_eq!(got.body, f);
    }
}
