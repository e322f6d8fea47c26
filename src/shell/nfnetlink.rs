//! nfnetlink (`NETLINK_NETFILTER`) by hand: the message and attribute
//! encoding, the acknowledgements, one socket that sends a request and
//! waits for the kernel's answer to each of its messages, and the one
//! nf_tables request the gateway makes while it runs: adding or deleting
//! set elements, in a batch (`NFNL_MSG_BATCH_BEGIN`, one
//! `NFT_MSG_NEWSETELEM` / `NFT_MSG_DELSETELEM` per element, each with
//! `NLM_F_ACK`, `NFNL_MSG_BATCH_END`), so that no process runs per change.
//!
//! The layout is the one `nft --debug=mnl` shows for `add element` (less
//! the set id attribute, which only names sets created in the same batch).
//!
//! Its socket blocks (until the kernel answers, at most 5 s): it is for
//! the gateway's firewall thread, never the task that owns a core.
//!
//! It knows neither the gateway's table nor its sets, nor how a key is
//! encoded for a set's type: callers hand it key bytes. The ctnetlink
//! messages (conntrack deletes) are the gateway's; they are built with
//! [`attr`], [`nested`] and [`message`] here.

use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::socket::{
    recv, sendto, setsockopt, socket, sockopt, AddressFamily, MsgFlags, NetlinkAddr, SockFlag,
    SockProtocol, SockType,
};
use nix::sys::time::TimeVal;

pub const NFNL_SUBSYS_CTNETLINK: u8 = 1;
pub const NFNL_SUBSYS_NFTABLES: u8 = 10;
pub const NLM_F_REQUEST: u16 = 0x1;
pub const NLM_F_ACK: u16 = 0x4;
pub const NLM_F_CREATE: u16 = 0x400;
pub const NLA_F_NESTED: u16 = 0x8000;
/// nf_tables' family of an `inet` table.
pub const NFPROTO_INET: u8 = 1;

const NLMSG_ERROR: u16 = 2;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFT_MSG_NEWSETELEM: u8 = 12;
const NFT_MSG_DELSETELEM: u8 = 14;
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_DATA_VALUE: u16 = 1;

/// How long [`Socket::exchange`] waits for the kernel's answers.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// Appends one netlink attribute (padded to 4 bytes).
pub fn attr(out: &mut Vec<u8>, ty: u16, payload: &[u8]) {
    let len = 4 + payload.len();
    out.extend_from_slice(&(len as u16).to_ne_bytes());
    out.extend_from_slice(&ty.to_ne_bytes());
    out.extend_from_slice(payload);
    out.resize(out.len().next_multiple_of(4), 0);
}

/// Appends a nested attribute (`NLA_F_NESTED` set) whose payload `inner`
/// writes.
pub fn nested(out: &mut Vec<u8>, ty: u16, inner: impl FnOnce(&mut Vec<u8>)) {
    let mut payload = Vec::new();
    inner(&mut payload);
    attr(out, ty | NLA_F_NESTED, &payload);
}

/// Appends one nfnetlink message: the netlink header (type `subsys` <<
/// 8 | `msg`), the nfgenmsg header (`family`, version 0, `res_id` in
/// network order), then `attrs`.
pub fn message(
    out: &mut Vec<u8>,
    ty: u16,
    flags: u16,
    seq: u32,
    family: u8,
    res_id: u16,
    attrs: &[u8],
) {
    let len = 16 + 4 + attrs.len();
    out.extend_from_slice(&(len as u32).to_ne_bytes());
    out.extend_from_slice(&ty.to_ne_bytes());
    out.extend_from_slice(&flags.to_ne_bytes());
    out.extend_from_slice(&seq.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes());
    out.push(family);
    out.push(0);
    out.extend_from_slice(&res_id.to_be_bytes());
    out.extend_from_slice(attrs);
}

/// The message type of `msg` of subsystem `subsys`.
pub fn msg_type(subsys: u8, msg: u8) -> u16 {
    u16::from(subsys) << 8 | u16::from(msg)
}

/// The answers in a datagram from the kernel: for each `NLMSG_ERROR`,
/// the sequence number of the message it answers and its code (0: done,
/// else a negative errno). Other messages are skipped.
pub fn answers(mut b: &[u8]) -> Vec<(u32, i32)> {
    let mut found = Vec::new();
    while b.len() >= 16 {
        let len = u32::from_ne_bytes(b[0..4].try_into().expect("4 bytes")) as usize;
        if len < 16 || len > b.len() {
            break;
        }
        let ty = u16::from_ne_bytes(b[4..6].try_into().expect("2 bytes"));
        if ty == NLMSG_ERROR && len >= 36 {
            // nlmsgerr: the code, then the header of the message answered.
            let code = i32::from_ne_bytes(b[16..20].try_into().expect("4 bytes"));
            let seq = u32::from_ne_bytes(b[28..32].try_into().expect("4 bytes"));
            found.push((seq, code));
        }
        b = &b[len.next_multiple_of(4).min(b.len())..];
    }
    found
}

/// Adding or deleting set elements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetOp {
    Add,
    Delete,
}

impl fmt::Display for SetOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SetOp::Add => "adding",
            SetOp::Delete => "deleting",
        })
    }
}

/// One element of a set: its key, encoded as the set's type, and how to
/// show it in an error (as `nft` writes it).
#[derive(Debug, Clone)]
pub struct SetElem {
    pub set: String,
    pub key: Vec<u8>,
    pub shown: String,
}

/// A set element change the kernel did not make.
#[derive(Debug)]
pub enum SetError {
    /// The socket failed, or the kernel did not answer in time.
    Io {
        what: &'static str,
        source: io::Error,
    },
    /// The kernel refused the change of one element (the whole batch is
    /// then undone).
    Refused {
        op: SetOp,
        table: String,
        set: String,
        element: String,
        errno: Errno,
    },
    /// The kernel refused the batch itself.
    Batch { errno: Errno },
}

impl fmt::Display for SetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SetError::Io { what, source } => write!(f, "{what}: {source}"),
            SetError::Refused {
                op,
                table,
                set,
                element,
                errno,
            } => write!(
                f,
                "{op} {element} in set {set} of table {table}: {errno:?} ({})",
                errno.desc()
            ),
            SetError::Batch { errno } => {
                write!(
                    f,
                    "nf_tables refused the batch: {errno:?} ({})",
                    errno.desc()
                )
            }
        }
    }
}

impl std::error::Error for SetError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SetError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// The batch that makes `op` for each of `elems` in the sets of `table`
/// (family `family`): batch begin with sequence number `seq`, then one
/// message per element (`seq + 1`, …), then batch end.
pub fn set_batch(seq: u32, op: SetOp, family: u8, table: &str, elems: &[SetElem]) -> Vec<u8> {
    let mut out = Vec::new();
    let nftables = u16::from(NFNL_SUBSYS_NFTABLES);
    message(
        &mut out,
        NFNL_MSG_BATCH_BEGIN,
        NLM_F_REQUEST,
        seq,
        0,
        nftables,
        &[],
    );
    for (i, e) in elems.iter().enumerate() {
        let (msg, flags) = match op {
            SetOp::Add => (NFT_MSG_NEWSETELEM, NLM_F_REQUEST | NLM_F_CREATE | NLM_F_ACK),
            SetOp::Delete => (NFT_MSG_DELSETELEM, NLM_F_REQUEST | NLM_F_ACK),
        };
        let mut attrs = Vec::new();
        attr(&mut attrs, NFTA_SET_ELEM_LIST_TABLE, &c_string(table));
        attr(&mut attrs, NFTA_SET_ELEM_LIST_SET, &c_string(&e.set));
        nested(&mut attrs, NFTA_SET_ELEM_LIST_ELEMENTS, |l| {
            nested(l, NFTA_LIST_ELEM, |el| {
                nested(el, NFTA_SET_ELEM_KEY, |k| attr(k, NFTA_DATA_VALUE, &e.key));
            });
        });
        let ty = msg_type(NFNL_SUBSYS_NFTABLES, msg);
        message(&mut out, ty, flags, seq + 1 + i as u32, family, 0, &attrs);
    }
    let end = seq + 1 + elems.len() as u32;
    message(
        &mut out,
        NFNL_MSG_BATCH_END,
        NLM_F_REQUEST,
        end,
        0,
        nftables,
        &[],
    );
    out
}

fn c_string(s: &str) -> Vec<u8> {
    let mut b = s.as_bytes().to_vec();
    b.push(0);
    b
}

/// A `NETLINK_NETFILTER` socket, kept open: one request at a time.
pub struct Socket {
    fd: OwnedFd,
    seq: u32,
    buf: Vec<u8>,
}

impl Socket {
    /// Opens it in the calling thread's network namespace.
    pub fn open() -> io::Result<Socket> {
        let fd = socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkNetFilter,
        )?;
        let t = TimeVal::new(ANSWER_TIMEOUT.as_secs() as _, 0);
        setsockopt(&fd, sockopt::ReceiveTimeout, &t)?;
        Ok(Socket {
            fd,
            seq: 0,
            buf: vec![0; 64 * 1024],
        })
    }

    /// `n` fresh sequence numbers; the first.
    pub fn next_seqs(&mut self, n: u32) -> u32 {
        // Sequence numbers start at 1 and never wrap to 0 in a run.
        let first = self.seq.wrapping_add(1).max(1);
        self.seq = first.wrapping_add(n - 1);
        first
    }

    /// Sends `request` (one or more messages) and waits for an answer to
    /// each sequence number in `seqs`, or to `fatal` (a batch's begin or
    /// end, answered only if the kernel refused the batch). Returns the
    /// codes in `seqs` order, or `Err(code)` of `fatal`'s answer.
    /// Answers to earlier requests are skipped.
    pub fn exchange(
        &mut self,
        request: &[u8],
        seqs: std::ops::Range<u32>,
        fatal: &[u32],
    ) -> io::Result<Result<Vec<i32>, i32>> {
        sendto(
            self.fd.as_raw_fd(),
            request,
            &NetlinkAddr::new(0, 0),
            MsgFlags::empty(),
        )?;
        let mut codes: Vec<Option<i32>> = vec![None; seqs.len()];
        while codes.iter().any(Option::is_none) {
            let n = recv(self.fd.as_raw_fd(), &mut self.buf, MsgFlags::empty())?;
            for (seq, code) in answers(&self.buf[..n]) {
                if fatal.contains(&seq) && code != 0 {
                    return Ok(Err(code));
                }
                if seqs.contains(&seq) {
                    codes[(seq - seqs.start) as usize] = Some(code);
                }
            }
        }
        Ok(Ok(codes.into_iter().map(|c| c.unwrap_or(0)).collect()))
    }

    /// Makes `op` for every element of `elems` in `table` (family
    /// `family`) in one batch: all or none. The first element the kernel
    /// refused is the error.
    pub fn change_set(
        &mut self,
        op: SetOp,
        family: u8,
        table: &str,
        elems: &[SetElem],
    ) -> Result<(), SetError> {
        if elems.is_empty() {
            return Ok(());
        }
        let n = elems.len() as u32;
        let begin = self.next_seqs(n + 2);
        let request = set_batch(begin, op, family, table, elems);
        let codes = self
            .exchange(&request, begin + 1..begin + 1 + n, &[begin, begin + 1 + n])
            .map_err(|source| SetError::Io {
                what: "asking nf_tables over netlink",
                source,
            })?
            .map_err(|code| SetError::Batch {
                errno: Errno::from_raw(-code),
            })?;
        match codes.iter().position(|&c| c != 0) {
            None => Ok(()),
            Some(i) => Err(SetError::Refused {
                op,
                table: table.to_string(),
                set: elems[i].set.clone(),
                element: elems[i].shown.clone(),
                errno: Errno::from_raw(-codes[i]),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `nft --debug=mnl add element inet t exposed_udp { 7000 }`
    /// sends (nftables 1.0.6), as native-endian (little-endian) words,
    /// without its `NFTA_SET_ELEM_LIST_SET_ID` attribute; sequence
    /// numbers 1 (batch begin), 2 (the element), 3 (batch end), and
    /// `NLM_F_CREATE | NLM_F_ACK` on the element.
    #[cfg(target_endian = "little")]
    #[test]
    fn an_added_port_is_laid_out_as_nft_sends_it() {
        let e = SetElem {
            set: "exposed_udp".into(),
            key: 7000u16.to_be_bytes().to_vec(),
            shown: "7000".into(),
        };
        let b = set_batch(1, SetOp::Add, NFPROTO_INET, "t", &[e]);
        #[rustfmt::skip]
        let want: Vec<u8> = [
            // batch begin: length 20, type 0x10, request, seq 1; nfgenmsg
            // family 0, version 0, res_id 10 (nf_tables) in network order.
            &[20, 0, 0, 0, 0x10, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0][..],
            &[0, 0, 0, 10],
            // NEWSETELEM (10 << 8 | 12), request | ack | create, seq 2;
            // family inet.
            &[64, 0, 0, 0, 12, 10, 0x05, 0x04, 2, 0, 0, 0, 0, 0, 0, 0],
            &[1, 0, 0, 0],
            // table "t", set "exposed_udp".
            &[6, 0, 1, 0, b't', 0, 0, 0],
            &[16, 0, 2, 0], b"exposed_udp\0",
            // elements { elem { key { value 1b 58 } } }, nested.
            &[20, 0, 3, 0x80, 16, 0, 1, 0x80, 12, 0, 1, 0x80, 6, 0, 1, 0, 0x1b, 0x58, 0, 0],
            // batch end, seq 3.
            &[20, 0, 0, 0, 0x11, 0, 1, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 10],
        ]
        .concat();
        assert_eq!(b, want);
    }

    #[test]
    fn a_delete_has_no_create_flag_and_one_message_per_element() {
        let e = |k: u16| SetElem {
            set: "s".into(),
            key: k.to_be_bytes().to_vec(),
            shown: k.to_string(),
        };
        let b = set_batch(7, SetOp::Delete, NFPROTO_INET, "t", &[e(1), e(2)]);
        let mut at = 20;
        for seq in [8u32, 9] {
            let m = &b[at..];
            let len = u32::from_ne_bytes(m[0..4].try_into().unwrap()) as usize;
            assert_eq!(
                u16::from_ne_bytes(m[4..6].try_into().unwrap()),
                10 << 8 | 14
            );
            assert_eq!(
                u16::from_ne_bytes(m[6..8].try_into().unwrap()),
                NLM_F_REQUEST | NLM_F_ACK
            );
            assert_eq!(u32::from_ne_bytes(m[8..12].try_into().unwrap()), seq);
            at += len;
        }
        assert_eq!(
            u32::from_ne_bytes(b[at + 8..at + 12].try_into().unwrap()),
            10
        );
        assert_eq!(at + 20, b.len());
    }

    #[test]
    fn answers_give_each_sequence_number_and_code() {
        // Two acknowledgements in one datagram: seq 5 done, seq 6 ENOENT
        // (with the refused message's header echoed).
        let ack = |seq: u32, code: i32| {
            let mut m = Vec::new();
            m.extend_from_slice(&36u32.to_ne_bytes());
            m.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
            m.extend_from_slice(&[0; 10]);
            m.extend_from_slice(&code.to_ne_bytes());
            m.extend_from_slice(&[20, 0, 0, 0, 12, 10, 5, 4]);
            m.extend_from_slice(&seq.to_ne_bytes());
            m.extend_from_slice(&[0; 4]);
            m
        };
        let b = [ack(5, 0), ack(6, -2)].concat();
        assert_eq!(answers(&b), vec![(5, 0), (6, -2)]);
        assert_eq!(answers(&b[..40]), vec![(5, 0)]);
    }

    #[test]
    fn a_refusal_names_the_element_and_the_errno() {
        let e = SetError::Refused {
            op: SetOp::Delete,
            table: "hoplab_gateway".into(),
            set: "exposed_udp".into(),
            element: "5353".into(),
            errno: Errno::ENOENT,
        };
        assert_eq!(
            e.to_string(),
            "deleting 5353 in set exposed_udp of table hoplab_gateway: ENOENT (No such file or directory)"
        );
    }
}
