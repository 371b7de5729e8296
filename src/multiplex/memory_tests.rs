//! What a parked session keeps of its mailbox stays small (issue 16, item
//! 7: memory per parked client): the UID list is ranges, so a large
//! mailbox with few gaps costs a few bytes, not four per message.

use super::view::{search_uids, UidList};

#[test]
fn ten_thousand_uids_with_few_gaps_are_a_few_ranges() {
    // 10,000 messages with 10 gaps (expunged UIDs 1000, 2000, …).
    let uids: Vec<u32> = (1..=10_010).filter(|u| u % 1000 != 0).collect();
    let set: String = (0..=10)
        .map(|k| {
            let lo = k * 1000 + 1;
            let hi = (lo + 998).min(10_010);
            format!("{lo}:{hi}")
        })
        .collect::<Vec<_>>()
        .join(",");
    let from_list = UidList::from_uids(uids);
    let line = format!("* ESEARCH (TAG \"s\") UID ALL {set}\r\n");
    let from_search = search_uids(line.as_bytes()).unwrap();
    assert_eq!(from_list, from_search);
    assert_eq!(from_list.len(), 10_000);
    assert_eq!(from_list.range_count(), 11);
    // 11 ranges of two u32: under 128 bytes of heap (40,000 as a Vec<u32>).
    assert!(from_list.range_count() * std::mem::size_of::<(u32, u32)>() <= 128);
    assert_eq!(from_list.seq_of(10_010), Some(10_000));
    assert_eq!(from_list.to_set(), set);
}
