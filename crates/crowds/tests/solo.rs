//! A crowd of one: a real `crowds jondo` process admitted by a fake blender into a
//! document that lists only itself. Its paths never leave it, so it is its own exit:
//! what it lets through reaches the server without any other jondo's checks.

use crowds_proto::identity::SecretKey;
use crowds_testkit::fake_blender::*;
use crowds_testkit::*;
use hyper::StatusCode;
use std::net::IpAddr;
use std::time::Duration;

/// The `crowds` binary these tests run.
const KIT: Kit = Kit::new(env!("CARGO_BIN_EXE_crowds"));

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_member_is_its_own_exit_and_enforces_the_head_limit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = SecretKey::generate().expect("key");
    let fake = FakeBlender::start(&key).await;
    let origin = Origin::start().await;
    let mut s = start_subject(KIT, dir.path(), fake.addr, key.public(), true);
    wait_joined(&fake, &mut s).await;
    let me = member(1, s.key, s.peer);
    fake.serve(Some(fresh(1, &[me]).sign(&key).expect("sign")));
    eventually("admission", Duration::from_secs(20), || async {
        match status_of(s.control).await {
            Ok(st) if st["admitted"] == true && st["members"] == 1 => Ok(()),
            Ok(st) => Err(st.to_string()),
            Err(e) => Err(e),
        }
    })
    .await;

    // The server sees the jondo itself.
    let mut client = HttpClient::connect(s.proxy).await.expect("connect proxy");
    let (status, text) = client.get_text(&origin.url("/whoami")).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(text.trim().parse::<IpAddr>().expect("IP"), s.peer.ip());

    // A large but acceptable header arrives whole.
    let big = "b".repeat(32 * 1024);
    let mut client = HttpClient::connect(s.proxy).await.expect("connect proxy");
    let (status, _, _) = client
        .get(&origin.url("/big-header"), &[("X-Big", &big)])
        .await
        .expect("answer");
    assert_eq!(status, StatusCode::OK);
    let seen = origin.seen_path("/big-header");
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].header("x-big"), [big.as_str()]);

    // A request head over the proxy's limit (crowds_jondo::proxy::MAX_HEAD_BYTES) is
    // refused by the proxy itself, whatever the path: here no link hop would catch it.
    let limit = crowds_jondo::proxy::MAX_HEAD_BYTES;
    let mut passed = Vec::new();
    for size in [limit + 4 * 1024, limit + 36 * 1024, 2 * limit, 3 * limit] {
        let huge = "h".repeat(size);
        let path = format!("/huge-header?{size}");
        let mut client = HttpClient::connect(s.proxy).await.expect("connect proxy");
        match client.get(&origin.url(&path), &[("X-Huge", &huge)]).await {
            Ok((status, _, _)) if status == StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => {}
            Ok((status, _, _)) => passed.push(format!("{size} bytes: {status}")),
            Err(e) => eprintln!("{size}-byte header: the proxy closed the connection: {e}"),
        }
        if !origin.seen_path(&path).is_empty() {
            passed.push(format!("{size} bytes reached the server"));
        }
    }
    assert!(
        passed.is_empty(),
        "request heads over the proxy's {limit}-byte limit were not refused: {passed:?}"
    );
}
