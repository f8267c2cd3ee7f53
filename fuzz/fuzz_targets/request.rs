//! Request parsing (`espfd::http::parse_request`) on arbitrary bytes, as if they had all
//! arrived on one connection: every request in them is parsed in turn, as the connection
//! reader does with pipelined requests.
//!
//! Besides "never panics", it checks what the reader relies on: a complete request never
//! claims more bytes than it was given, its body is exactly as long as announced and within
//! the limit, a refusal is one of the statuses the ingress documents, and the answer for a
//! prefix of the input never contradicts the answer for the whole.

#![no_main]

use std::net::SocketAddr;

use espfd::http::Limits;
use espfd::http::{parse_request, Parsed};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Small limits so that the fuzzer reaches them with short inputs.
    let limits = Limits {
        max_header: 512,
        max_body: 1024,
        ..Limits::default()
    };
    let peer = SocketAddr::from(([127, 0, 0, 1], 40000));
    let mut rest = data;
    while !rest.is_empty() {
        match parse_request(rest, peer, &limits) {
            Ok(Parsed::Complete { request, len }) => {
                assert!(len > 0 && len <= rest.len());
                assert!(request.body.len() <= limits.max_body);
                assert_eq!(&rest[len - request.body.len()..len], &request.body[..]);
                if let Some(cl) = request.header("content-length") {
                    assert_eq!(cl.trim().parse::<usize>().ok(), Some(request.body.len()));
                }
                assert!(request
                    .headers
                    .iter()
                    .all(|(k, _)| *k == k.to_ascii_lowercase()));
                // The same request parses the same from exactly its own bytes.
                match parse_request(&rest[..len], peer, &limits) {
                    Ok(Parsed::Complete {
                        request: again,
                        len: l,
                    }) => {
                        assert_eq!(l, len);
                        assert_eq!(again.body, request.body);
                        assert_eq!(again.path, request.path);
                    }
                    other => panic!("a complete request re-parsed as {other:?}"),
                }
                rest = &rest[len..];
            }
            Ok(Parsed::Incomplete { needed }) => {
                assert!(needed > rest.len());
                // Half of the input is incomplete too, or already refused.
                if let Ok(Parsed::Complete { .. }) =
                    parse_request(&rest[..rest.len() / 2], peer, &limits)
                {
                    panic!("a prefix of an incomplete request parsed as complete");
                }
                break;
            }
            Err(r) => {
                assert!(matches!(r.status, 400 | 411 | 413 | 417 | 431), "{r:?}");
                assert!(!r.reason.contains('\n'));
                break;
            }
        }
    }
});
