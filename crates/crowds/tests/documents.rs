//! Crowd documents a jondo must refuse: forged, stale, expired, from the future,
//! contradictory, or garbage. First at the library level ([`CrowdView::accept`]), then
//! against a real `crowds jondo` process talking to a fake blender that serves whatever
//! document the test chooses (and, in another test, presents the wrong key).

use crowds_proto::document::{DocumentError, MAGIC};
use crowds_proto::identity::SecretKey;
use crowds_proto::view::{Change, CrowdView, ViewError, MAX_CLOCK_SKEW_MS};
use crowds_testkit::fake_blender::*;
use crowds_testkit::*;
use hyper::StatusCode;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// The `crowds` binary these tests run.
const KIT: Kit = Kit::new(env!("CARGO_BIN_EXE_crowds"));

#[test]
fn view_rejects_forged_stale_expired_and_malformed_documents() {
    let blender = SecretKey::generate().expect("key");
    let rogue = SecretKey::generate().expect("key");
    let (m1, m2, m3) = (fake_member(1), fake_member(2), fake_member(3));
    let now = now_ms();
    let mut view = CrowdView::new(blender.public());

    // Signed by another key: refused, nothing adopted.
    let forged = fresh(1, std::slice::from_ref(&m1))
        .sign(&rogue)
        .expect("sign");
    assert_eq!(
        view.accept(&forged, now),
        Err(ViewError::Document(DocumentError::BadSignature))
    );
    assert!(view.current().is_none());

    // A genuine document is adopted.
    let d2 = fresh(2, &[m1.clone(), m2.clone()]);
    assert_eq!(
        view.accept(&d2.sign(&blender).expect("sign"), now),
        Ok(Change::NewEpoch {
            joined: vec![1, 2],
            left: vec![]
        })
    );

    // An older epoch after a newer one, even freshly signed: stale.
    let d1 = doc(1, &[m1.clone(), m3.clone()], now + 10, now + HOUR_MS);
    assert_eq!(
        view.accept(&d1.sign(&blender).expect("sign"), now + 20),
        Err(ViewError::Stale { got: 1, current: 2 })
    );
    // The current epoch re-signed earlier than the held copy: stale too.
    let older_copy = doc(2, &[m1.clone(), m2.clone()], now - 1000, now + HOUR_MS);
    assert!(matches!(
        view.accept(&older_copy.sign(&blender).expect("sign"), now + 20),
        Err(ViewError::Stale { .. })
    ));
    // The current epoch with other members: the blender contradicts itself.
    let contradiction = doc(2, &[m1.clone(), m3.clone()], now + 30, now + HOUR_MS);
    assert_eq!(
        view.accept(&contradiction.sign(&blender).expect("sign"), now + 40),
        Err(ViewError::Inconsistent(2))
    );
    // Expired (a replay of an old, once valid document of a later epoch).
    let expired = doc(
        9,
        std::slice::from_ref(&m1),
        now - 2 * HOUR_MS,
        now - HOUR_MS,
    );
    assert_eq!(
        view.accept(&expired.sign(&blender).expect("sign"), now),
        Err(ViewError::Expired { epoch: 9 })
    );
    // Expiring exactly now is expired.
    let edge = doc(9, std::slice::from_ref(&m1), now - HOUR_MS, now);
    assert_eq!(
        view.accept(&edge.sign(&blender).expect("sign"), now),
        Err(ViewError::Expired { epoch: 9 })
    );
    // Issued further in the future than clock skew explains.
    let future = doc(
        10,
        std::slice::from_ref(&m1),
        now + MAX_CLOCK_SKEW_MS + 60_000,
        now + 2 * HOUR_MS,
    );
    assert_eq!(
        view.accept(&future.sign(&blender).expect("sign"), now),
        Err(ViewError::FromFuture)
    );

    // Damaged bytes.
    let good = fresh(11, std::slice::from_ref(&m1))
        .sign(&blender)
        .expect("sign");
    let mut flipped = good.clone();
    let at = flipped.len() / 2;
    flipped[at] ^= 0x01;
    assert!(
        matches!(view.accept(&flipped, now), Err(ViewError::Document(_))),
        "a flipped bit must be rejected"
    );
    let mut signature_flipped = good.clone();
    let last = signature_flipped.len() - 1;
    signature_flipped[last] ^= 0x80;
    assert_eq!(
        view.accept(&signature_flipped, now),
        Err(ViewError::Document(DocumentError::BadSignature))
    );
    assert!(matches!(
        view.accept(&good[..good.len() - 10], now),
        Err(ViewError::Document(DocumentError::Malformed(_)))
    ));
    let mut trailing = good.clone();
    trailing.push(0);
    assert!(matches!(
        view.accept(&trailing, now),
        Err(ViewError::Document(DocumentError::Malformed(_)))
    ));
    assert_eq!(
        view.accept(&good[MAGIC.len()..], now),
        Err(ViewError::Document(DocumentError::BadMagic))
    );
    assert_eq!(
        view.accept(b"", now),
        Err(ViewError::Document(DocumentError::BadMagic))
    );
    let huge = vec![0u8; crowds_proto::document::MAX_DOCUMENT_BYTES + 1];
    assert!(matches!(
        view.accept(&huge, now),
        Err(ViewError::Document(DocumentError::TooLarge(_)))
    ));

    // None of that changed the view.
    assert_eq!(view.current(), Some(&d2));
    assert!(view.usable(now).is_some());

    // The genuine next epoch still goes through: members 3 joined, 2 left.
    let d3 = fresh(3, &[m1.clone(), m3.clone()]);
    assert_eq!(
        view.accept(&d3.sign(&blender).expect("sign"), now + 50),
        Ok(Change::NewEpoch {
            joined: vec![3],
            left: vec![2]
        })
    );
    // A refresh of it (later signature, same members) is accepted as such.
    let d3b = doc(3, &[m1.clone(), m3.clone()], now + 60, now + 2 * HOUR_MS);
    assert_eq!(
        view.accept(&d3b.sign(&blender).expect("sign"), now + 70),
        Ok(Change::Refreshed)
    );
    assert!(
        view.usable(now + HOUR_MS + 100).is_some(),
        "the refresh extended the expiry"
    );

    // A view bound to one crowd refuses another crowd's document.
    let mut named = CrowdView::new(blender.public()).for_crowd("default");
    let mut other = fresh(1, std::slice::from_ref(&m1));
    other.crowd = "other".into();
    assert_eq!(
        named.accept(&other.sign(&blender).expect("sign"), now),
        Err(ViewError::WrongCrowd)
    );
}

#[test]
fn the_blender_cannot_sign_an_invalid_document() {
    let key = SecretKey::generate().expect("key");
    let (m1, m2) = (fake_member(1), fake_member(2));
    for pf in [1.0, 1.5, -0.1, f64::NAN] {
        let mut d = fresh(1, std::slice::from_ref(&m1));
        d.forward_probability = pf;
        assert!(
            matches!(d.sign(&key), Err(DocumentError::Invalid(_))),
            "pf {pf}"
        );
    }
    let unsorted = fresh(1, &[m2.clone(), m1.clone()]);
    assert!(matches!(
        unsorted.sign(&key),
        Err(DocumentError::Invalid(_))
    ));
    let mut twin = m2.clone();
    twin.key = m1.key;
    let shared_key = fresh(1, &[m1.clone(), twin]);
    assert!(matches!(
        shared_key.sign(&key),
        Err(DocumentError::Invalid(_))
    ));
    let now = now_ms();
    let backwards = doc(1, std::slice::from_ref(&m1), now, now);
    assert!(matches!(
        backwards.sign(&key),
        Err(DocumentError::Invalid(_))
    ));
    let dup_id = fresh(1, &[m1.clone(), m1.clone()]);
    assert!(matches!(dup_id.sign(&key), Err(DocumentError::Invalid(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jondo_process_adopts_only_genuine_current_documents() {
    let dir = tempfile::tempdir().expect("tempdir");
    let blender_key = SecretKey::generate().expect("key");
    let rogue = SecretKey::generate().expect("key");
    let fake = FakeBlender::start(&blender_key).await;
    let origin = Origin::start().await;
    // Not allowed: this jondo's exit must refuse loopback servers.
    let mut s = start_subject(KIT, dir.path(), fake.addr, blender_key.public(), false);

    // It logs in over TLS with its identity key and announces its peer address.
    let joins = wait_joined(&fake, &mut s).await;
    let (client_key, join) = &joins[0];
    assert_eq!(
        *client_key, s.key,
        "joined with another key than identity.key"
    );
    assert_eq!(join["account"], "tester", "{join}");
    assert_eq!(join["password"], "fake blender password", "{join}");
    assert_eq!(join["peer_addr"], s.peer.to_string(), "{join}");
    let me = member(1, s.key, s.peer);
    let other = fake_member(2);

    eventually("the status port", Duration::from_secs(20), || async {
        status_of(s.control).await.map(drop)
    })
    .await;
    assert_eq!(summary(&s).await, (0, 0, false));

    // Forged: signed by a key that is not the pinned one.
    fake.serve(Some(
        fresh(1, std::slice::from_ref(&me))
            .sign(&rogue)
            .expect("sign"),
    ));
    fake.wait_judged().await;
    assert_eq!(
        summary(&s).await,
        (0, 0, false),
        "adopted a forged document"
    );
    assert!(s.proc.stderr().contains("signature"), "{}", s.proc.stderr());
    let url = origin.url("/never");
    assert_eq!(
        proxied_status(s.proxy, &url).await,
        StatusCode::SERVICE_UNAVAILABLE,
        "a jondo outside any crowd must not carry requests"
    );

    // Genuine epoch 5, listing only this jondo.
    fake.serve(Some(
        fresh(5, std::slice::from_ref(&me))
            .sign(&blender_key)
            .expect("sign"),
    ));
    wait_summary(&s, (5, 1, true)).await;
    assert_eq!(status(&s).await["pf"].as_f64(), Some(0.75));
    // Its exit may not reach loopback servers (no --allow-private-destinations).
    assert_eq!(proxied_status(s.proxy, &url).await, StatusCode::FORBIDDEN);
    let mut tcp = tokio::net::TcpStream::connect(s.proxy)
        .await
        .expect("proxy");
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let target = origin.addr.to_string();
    tcp.write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes())
        .await
        .expect("CONNECT");
    // The jondo is optimistic: it says "connected" at once, and its exit's refusal
    // reaches the TLS client as a fatal access_denied alert.
    let mut head = [0u8; 12];
    tokio::time::timeout(REQUEST_TIMEOUT, tcp.read_exact(&mut head))
        .await
        .expect("CONNECT answer in time")
        .expect("CONNECT answer");
    assert_eq!(&head, b"HTTP/1.1 200", "optimistic CONNECT to loopback");
    let mut rest = Vec::new();
    while !rest.ends_with(b"\r\n\r\n") {
        assert!(rest.len() < 4096, "head too long: {rest:?}");
        let mut byte = [0u8; 1];
        tcp.read_exact(&mut byte).await.expect("rest of the head");
        rest.push(byte[0]);
    }
    let answer = tls_opening_answer(&mut tcp, REQUEST_TIMEOUT)
        .await
        .expect("the refused tunnel closes");
    assert_eq!(
        answer,
        [21, 3, 3, 0, 2, 2, 49],
        "access_denied, then the end"
    );
    assert!(
        origin.seen().is_empty(),
        "the exit policy let through {:?}",
        origin.seen()
    );

    // Every kind of bad document leaves epoch 5 in place.
    let now = now_ms();
    let bad: Vec<(&str, Vec<u8>)> = vec![
        (
            "stale",
            fresh(3, &[me.clone(), other.clone()])
                .sign(&blender_key)
                .expect("sign"),
        ),
        (
            "expired",
            doc(
                9,
                &[me.clone(), other.clone()],
                now - 2 * HOUR_MS,
                now - HOUR_MS,
            )
            .sign(&blender_key)
            .expect("sign"),
        ),
        (
            "future",
            doc(
                10,
                &[me.clone(), other.clone()],
                now + 2 * HOUR_MS,
                now + 3 * HOUR_MS,
            )
            .sign(&blender_key)
            .expect("sign"),
        ),
        (
            "different members",
            fresh(5, &[me.clone(), other.clone()])
                .sign(&blender_key)
                .expect("sign"),
        ),
        (
            "signature",
            fresh(11, &[me.clone(), other.clone()])
                .sign(&rogue)
                .expect("sign"),
        ),
        (
            "not a crowd document",
            b"<html>captive portal</html>".to_vec(),
        ),
    ];
    for (why, bytes) in bad {
        let logged = s.proc.stderr().matches(why).count();
        fake.serve(Some(bytes));
        fake.wait_judged().await;
        assert_eq!(summary(&s).await, (5, 1, true), "after a {why} document");
        assert!(
            s.proc.stderr().matches(why).count() > logged,
            "no rejection naming {why:?} in the log:\n{}",
            s.proc.stderr_tail(10)
        );
    }
    s.proc.assert_running();

    // The genuine next epoch is adopted; one that drops this jondo ends its admission.
    fake.serve(Some(
        fresh(6, &[me.clone(), other.clone()])
            .sign(&blender_key)
            .expect("sign"),
    ));
    wait_summary(&s, (6, 2, true)).await;
    fake.serve(Some(
        fresh(7, std::slice::from_ref(&other))
            .sign(&blender_key)
            .expect("sign"),
    ));
    wait_summary(&s, (7, 1, false)).await;
    assert_eq!(
        proxied_status(s.proxy, &url).await,
        StatusCode::SERVICE_UNAVAILABLE,
        "a jondo dropped from the crowd must not carry requests"
    );
    assert!(origin.seen().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jondo_refuses_a_blender_with_another_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pinned = SecretKey::generate().expect("key");
    let impostor = SecretKey::generate().expect("key");
    let fake = FakeBlender::start(&impostor).await;
    fake.serve(Some(
        fresh(1, &[fake_member(1)]).sign(&impostor).expect("sign"),
    ));
    let mut s = start_subject(KIT, dir.path(), fake.addr, pinned.public(), false);
    eventually("two connection attempts", Duration::from_secs(30), || {
        let n = fake.state.connections.load(Ordering::SeqCst);
        async move {
            if n >= 2 {
                Ok(())
            } else {
                Err(format!("{n} connections"))
            }
        }
    })
    .await;
    assert_eq!(
        fake.state.handshakes.load(Ordering::SeqCst),
        0,
        "the jondo completed TLS with a blender presenting another key"
    );
    assert!(fake.state.joins.lock().expect("lock").is_empty());
    assert_eq!(fake.fetches(), 0);
    // It keeps trying (the real blender may come back) and says why it cannot log in.
    s.proc.assert_running();
    let stderr = s.proc.stderr();
    assert!(stderr.contains("peer certificate"), "{stderr}");
    assert!(
        !stderr.contains("fake blender password"),
        "password in the log: {stderr}"
    );
}
