//! `tickwire serve` configuration through the real binary: flags over
//! `TICKWIRE_*` environment over the TOML file, and clear refusals.

use std::net::SocketAddr;

use tickwire_e2e::{RawClient, Received, WAIT, read_banner, tickwire_command};
use tickwire_protocol::{ClientMessage, ErrorCode};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Flags, environment variables, and what the case expects.
type Case<'a, T> = (&'a [&'a str], &'a [(&'a str, &'a str)], T);

/// `tickwire serve` on an ephemeral port with `args` and `env`, without any
/// inherited `TICKWIRE_*` variable.
fn serve(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut command =
        tickwire_command(&["serve", "--listen", "127.0.0.1:0", "--log-level", "warn"]);
    command.args(args).envs(env.iter().copied());
    command
}

/// Starts the broker and reads the address from its banner.
async fn start(args: &[&str], env: &[(&str, &str)]) -> (Child, SocketAddr) {
    let mut child = serve(args, env).spawn().expect("start tickwire serve");
    let stdout = child.stdout.take().expect("stdout");
    let (addr, _) = read_banner(&mut BufReader::new(stdout).lines()).await;
    (child, addr)
}

/// How many subscriptions one connection gets before `too_many_subscriptions`.
async fn subscription_limit(addr: SocketAddr) -> usize {
    let mut client = RawClient::connect(addr).await;
    for n in 0..100 {
        let id = client.next_id();
        let pattern = format!("limit.t{n}");
        client
            .send(&ClientMessage::Subscribe {
                id,
                pattern: &pattern,
                options: Default::default(),
            })
            .await;
        match client.recv().await {
            Received::Subscribed(got, _) if got == id => {}
            Received::Error {
                code: ErrorCode::TooManySubscriptions,
                ..
            } => return n,
            other => panic!("unexpected {other:?}"),
        }
    }
    panic!("no subscription limit below 100")
}

#[tokio::test]
async fn flags_override_environment_override_file() {
    let dir = std::env::temp_dir().join(format!("tickwire-serve-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("tickwire.toml");
    std::fs::write(&file, "max_subscriptions = 5\n").expect("write config");
    let file = file.to_str().expect("utf-8 path");

    let cases: [Case<usize>; 3] = [
        (&["--config", file], &[], 5),
        (
            &[],
            &[
                ("TICKWIRE_CONFIG", file),
                ("TICKWIRE_MAX_SUBSCRIPTIONS", "3"),
            ],
            3,
        ),
        (
            &["--config", file, "--max-subscriptions", "2"],
            &[("TICKWIRE_MAX_SUBSCRIPTIONS", "3")],
            2,
        ),
    ];
    for (args, env, want) in cases {
        let (mut child, addr) = start(args, env).await;
        assert_eq!(subscription_limit(addr).await, want, "{args:?} {env:?}");
        child.kill().await.expect("stop the broker");
    }
    std::fs::remove_dir_all(&dir).expect("remove temp dir");
}

#[tokio::test]
async fn invalid_values_exit_2_naming_the_setting() {
    let cases: [Case<&str>; 3] = [
        (&["--max-topics", "lots"], &[], "--max-topics"),
        (&[], &[("TICKWIRE_KEEPALIVE_INTERVAL", "soon")], "keepalive"),
        (
            &["--outbound-queue-bytes", "1KiB"],
            &[],
            "--outbound-queue-bytes",
        ),
    ];
    for (args, env, named) in cases {
        let output = tokio::time::timeout(WAIT, serve(args, env).output())
            .await
            .expect("exits in time")
            .expect("run tickwire serve");
        assert_eq!(output.status.code(), Some(2), "{args:?} {env:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(named), "{args:?} {env:?}: {stderr}");
    }
}
