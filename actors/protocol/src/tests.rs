//! Round trips and decoding of every request variant, and of replies.

use serde::Serialize;

use super::*;

#[allow(
    clippy::too_many_lines,
    reason = "one sample per request variant, and the list grows with them"
)]
fn samples() -> Vec<Request> {
    vec![
        Request::Ping,
        Request::GetStatus,
        Request::GetMetrics,
        Request::GetConfig,
        Request::Shutdown { reason: "r".into() },
        Request::ListCapsules,
        Request::ReloadCapsules,
        Request::GetCommands,
        Request::InvokeCommand {
            name: "echo".into(),
            args: vec!["a".into()],
        },
        Request::GetCapsuleMetadata {
            name: Some("echo".into()),
        },
        Request::GetSupervisionTree,
        Request::Subscribe {
            pattern: "user.>".into(),
        },
        Request::Unsubscribe {
            pattern: "user.>".into(),
        },
        Request::Publish {
            topic: "user.prompt".into(),
            payload: RawValue::encode("hi").unwrap(),
        },
        Request::InjectFault {
            target: "bus".into(),
            fault: Fault::Hang { millis: 5 },
        },
        Request::KvGet { key: "k".into() },
        Request::KvPut {
            key: "k".into(),
            value: vec![0, 1, 255],
        },
        Request::KvDelete { key: "k".into() },
        Request::KvList {
            prefix: "p".into(),
            limit: Some(3),
        },
        Request::GrantCapability {
            subject: "echo".into(),
            resource: "kv".into(),
        },
        Request::RevokeCapability {
            subject: "echo".into(),
            resource: "kv".into(),
        },
        Request::ListCapabilities { subject: None },
        Request::AuditTail {
            n: Some(5),
            from: Some(2),
        },
        Request::AuditVerify,
        Request::AuditPrune,
        Request::VfsRead {
            path: "a".into(),
            offset: 1,
            len: Some(2),
        },
        Request::VfsWrite {
            path: "a".into(),
            data: b"x".to_vec(),
            create_dirs: true,
        },
        Request::VfsList { path: ".".into() },
        Request::VfsStat { path: "a".into() },
        Request::VfsRemove {
            path: "a".into(),
            recursive: false,
        },
        Request::VfsMkdir {
            path: "d".into(),
            parents: true,
        },
        Request::ListMcpServers,
        Request::ReloadMcp,
        Request::ListMcpTools {
            server: Some("tools".into()),
        },
        Request::CallMcpTool {
            server: "tools".into(),
            tool: "echo".into(),
            arguments: RawValue::from_value(&rmpv::Value::Map(vec![("text".into(), "hi".into())]))
                .unwrap(),
        },
        Request::TrustWorkspace {
            path: Some("/w".into()),
        },
        Request::UntrustWorkspace { path: None },
        Request::ListTrust,
        Request::ListSettings {
            capsule: "fetch".into(),
        },
        Request::SetSetting {
            capsule: "fetch".into(),
            name: "api_key".into(),
            value: SettingValue("s3cret".into()),
        },
        Request::UnsetSetting {
            capsule: "fetch".into(),
            name: "api_key".into(),
        },
        Request::InspectCapsule {
            path: "/src/fetch".into(),
        },
        Request::InstallCapsule {
            path: "/src/fetch".into(),
            digest: "ab12".into(),
        },
        Request::UninstallCapsule {
            name: "fetch".into(),
        },
        Request::ListApprovals,
        Request::AnswerApproval {
            id: 3,
            answer: crate::ApprovalAnswer::Always,
        },
        Request::ListCrashes,
        Request::GetCrash {
            id: "0001733562000123-trap-a1b2c3".into(),
        },
        Request::RemoveCrash { id: None },
        Request::ReplayCrash {
            id: "0001733562000123-trap-a1b2c3".into(),
        },
    ]
}

#[test]
fn a_setting_value_never_shows_in_a_request_debug_form() {
    let request = Request::SetSetting {
        capsule: "fetch".into(),
        name: "api_key".into(),
        value: SettingValue("s3cret".into()),
    };
    let shown = format!("{request:?}");
    assert!(
        !shown.contains("s3cret") && shown.contains("6 bytes"),
        "{shown}"
    );
    assert_eq!(request.target(), "fetch/api_key");
}

#[test]
fn every_variant_round_trips_and_is_listed() {
    let all = samples();
    assert_eq!(all.len(), Request::NAMES.len());
    for (i, request) in all.into_iter().enumerate() {
        assert_eq!(Request::NAMES[request.index()], request.name());
        let frame = RequestFrame {
            id: i as u64,
            request,
        };
        let bytes = rmp_serde::to_vec_named(&frame).unwrap();
        assert_eq!(decode_request(&bytes).unwrap(), frame);
    }
}

#[test]
fn every_error_code_is_listed_at_its_own_index() {
    for (i, code) in ErrorCode::ALL.iter().enumerate() {
        assert_eq!(*code as usize, i, "{code:?}");
    }
    assert_eq!(ErrorCode::ALL.last(), Some(&ErrorCode::Other));
}

#[test]
fn invoke_command_takes_a_bounded_number_of_args() {
    let frame = |n: usize| {
        rmp_serde::to_vec_named(&RequestFrame {
            id: 3,
            request: Request::InvokeCommand {
                name: "echo".into(),
                args: vec![String::new(); n],
            },
        })
        .unwrap()
    };
    assert!(decode_request(&frame(MAX_ARGS)).is_ok());
    let (id, e) = decode_request(&frame(MAX_ARGS + 1)).unwrap_err();
    assert_eq!(id, Some(3));
    assert!(
        matches!(&e, ProtocolError::BadRequest(m) if m.contains("at most 4096")),
        "{e:?}"
    );
}

#[test]
fn byte_values_travel_as_messagepack_bin() {
    let bytes = rmp_serde::to_vec_named(&Request::KvPut {
        key: "k".into(),
        value: vec![1, 2, 3],
    })
    .unwrap();
    // ... "value": bin8 of length 3
    assert!(
        bytes.windows(5).any(|w| w == [0xc4, 3, 1, 2, 3]),
        "{bytes:x?}"
    );
}

#[test]
fn unit_variants_are_bare_strings() {
    let bytes = rmp_serde::to_vec_named(&RequestFrame {
        id: 1,
        request: Request::Ping,
    })
    .unwrap();
    // {"id": 1, "request": "Ping"}
    let expected = [
        0x82, 0xa2, b'i', b'd', 0x01, 0xa7, b'r', b'e', b'q', b'u', b'e', b's', b't', 0xa4, b'P',
        b'i', b'n', b'g',
    ];
    assert_eq!(bytes, expected);
}

#[test]
fn unknown_variants_are_told_apart_from_malformed_requests() {
    #[derive(Serialize)]
    struct Raw<R> {
        id: u64,
        request: R,
    }
    let unknown = rmp_serde::to_vec_named(&Raw {
        id: 7,
        request: "Frobnicate",
    })
    .unwrap();
    let (id, e) = decode_request(&unknown).unwrap_err();
    assert_eq!(id, Some(7));
    assert!(matches!(e, ProtocolError::UnknownRequest(n) if n == "Frobnicate"));

    let mut empty = std::collections::BTreeMap::new();
    empty.insert(
        "Shutdown",
        std::collections::BTreeMap::<String, String>::new(),
    );
    let missing = rmp_serde::to_vec_named(&Raw {
        id: 8,
        request: empty,
    })
    .unwrap();
    let (id, e) = decode_request(&missing).unwrap_err();
    assert_eq!(id, Some(8));
    assert!(
        matches!(e, ProtocolError::BadRequest(ref m) if m.contains("reason")),
        "{e:?}"
    );

    let (id, e) = decode_request(&rmp_serde::to_vec_named(&42u8).unwrap()).unwrap_err();
    assert_eq!(id, None);
    assert!(matches!(e, ProtocolError::BadRequest(_)));

    let no_request = rmp_serde::to_vec_named(
        &[("id", 3u8)]
            .into_iter()
            .collect::<std::collections::BTreeMap<_, _>>(),
    )
    .unwrap();
    let (id, e) = decode_request(&no_request).unwrap_err();
    assert_eq!(id, Some(3));
    assert!(matches!(e, ProtocolError::BadRequest(m) if m.contains("request")));
}

#[test]
fn only_named_maps_holding_one_value_are_requests() {
    // [1, "Ping"]: a positional encoding.
    let (id, e) = decode_request(&[0x92, 0x01, 0xa4, b'P', b'i', b'n', b'g']).unwrap_err();
    assert_eq!(id, None);
    assert!(matches!(e, ProtocolError::BadRequest(_)));
    // {0: 2, 1: "Ping"}: keyed by field index.
    let (_, e) =
        decode_request(&[0x82, 0x00, 0x02, 0x01, 0xa4, b'P', b'i', b'n', b'g']).unwrap_err();
    assert!(matches!(e, ProtocolError::BadRequest(_)));
    // A valid request followed by a stray byte.
    let mut bytes = rmp_serde::to_vec_named(&RequestFrame {
        id: 9,
        request: Request::Ping,
    })
    .unwrap();
    bytes.push(0xc0);
    let (id, e) = decode_request(&bytes).unwrap_err();
    assert_eq!(id, Some(9));
    assert!(matches!(e, ProtocolError::BadRequest(m) if m.contains("after the value")));
}

#[test]
fn a_readable_id_is_kept_whatever_is_wrong_with_the_request() {
    #[derive(Serialize)]
    struct Raw<R> {
        id: u64,
        request: R,
    }
    for bytes in [
        rmp_serde::to_vec_named(&Raw {
            id: 10,
            request: 17,
        })
        .unwrap(),
        rmp_serde::to_vec_named(&Raw {
            id: 10,
            request: true,
        })
        .unwrap(),
        rmp_serde::to_vec_named(&Raw {
            id: 10,
            request: ["Ping"],
        })
        .unwrap(),
    ] {
        let (id, e) = decode_request(&bytes).unwrap_err();
        assert_eq!(id, Some(10));
        assert!(matches!(e, ProtocolError::BadRequest(_)));
    }
}

#[test]
fn payloads_are_maps_keyed_by_field_names() {
    #[derive(Serialize)]
    struct P<'a> {
        text: &'a str,
    }
    let value = to_payload(&P { text: "hi" }).unwrap().to_value();
    let map = value.as_map().unwrap();
    assert_eq!(map[0].0.as_str(), Some("text"));
    assert_eq!(map[0].1.as_str(), Some("hi"));
}

#[test]
fn replies_decode_with_and_without_results() {
    let bytes = rmp_serde::to_vec_named(&ReplyFrame {
        id: 4,
        result: &"pong",
    })
    .unwrap();
    let head: FrameHead = rmp_serde::from_slice(&bytes).unwrap();
    assert_eq!(head.id, Some(4));
    let typed: TypedReply<String> = rmp_serde::from_slice(&bytes).unwrap();
    assert_eq!(typed.result.as_deref(), Some("pong"));

    let body = ErrorBody {
        code: ErrorCode::NotFound,
        message: "x".into(),
    };
    let bytes = rmp_serde::to_vec_named(&ErrorFrame {
        id: None,
        error: &body,
    })
    .unwrap();
    let head: FrameHead = rmp_serde::from_slice(&bytes).unwrap();
    assert_eq!((head.id, head.error), (None, Some(body)));
}
