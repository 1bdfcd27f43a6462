//! A synthetic corpus for tests and benchmarks: distinct documents over a small shared
//! vocabulary, exact copies, near copies (a share of words replaced), and junk (too short,
//! symbol soup, one line repeated), shuffled. Deterministic from the seed. Ids say what each
//! document is: `d7`, `x3-of-d7`, `n5-of-d7`, `j2-short`. Junk documents are distinct from
//! each other, so only the quality rules remove them.

use dsv3c_runtime::init::SplitMix64;

const VOCAB: &str = "the of and to a in that is was he for it with as his on be at by had this not are but from or have an they which one you were her all she there would their we him been has when who will more no if out so said what up its about into than them can only other new some could time these two may then do first any my now such like our over man me even most made after also did many before must through back years where much your way well down should because each just those people how too little state good very make world still own see men work long get here between both life being under never day same another know while last might us great old year off come since against go came right used take three";

/// Counts of each kind of document.
#[derive(Debug, Clone, Copy)]
pub struct Mix {
    pub distinct: usize,
    pub exact: usize,
    pub near: usize,
    pub junk: usize,
    /// Share of words replaced in a near copy.
    pub edit: f64,
}

fn prose(r: &mut SplitMix64, words: usize) -> String {
    let vocab: Vec<&str> = VOCAB.split(' ').collect();
    let mut s = String::new();
    let mut in_sentence = 0;
    let mut len = 8 + (r.next_u64() % 9) as usize;
    for i in 0..words {
        let w = vocab[(r.next_u64() % vocab.len() as u64) as usize];
        if in_sentence == 0 {
            let mut c = w.chars();
            s.extend(c.next().map(|f| f.to_ascii_uppercase()));
            s.push_str(c.as_str());
        } else {
            s.push_str(w);
        }
        in_sentence += 1;
        if in_sentence == len || i + 1 == words {
            s.push_str(".\n");
            in_sentence = 0;
            len = 8 + (r.next_u64() % 9) as usize;
        } else {
            s.push(' ');
        }
    }
    s
}

/// Replaces `share` of the words (at least one) with random vocabulary words.
fn edit(r: &mut SplitMix64, text: &str, share: f64) -> String {
    let vocab: Vec<&str> = VOCAB.split(' ').collect();
    let mut lines: Vec<Vec<String>> = text.lines().map(|l| l.split(' ').map(String::from).collect()).collect();
    let total: usize = lines.iter().map(Vec::len).sum();
    let n = ((total as f64 * share).round() as usize).max(1);
    for _ in 0..n {
        let mut k = (r.next_u64() % total as u64) as usize;
        for line in lines.iter_mut() {
            if k < line.len() {
                let end = if line[k].ends_with('.') { "." } else { "" };
                line[k] = format!("{}{end}", vocab[(r.next_u64() % vocab.len() as u64) as usize]);
                break;
            }
            k -= line.len();
        }
    }
    lines.iter().map(|l| l.join(" ")).collect::<Vec<_>>().join("\n")
}

/// (id, text) of every document, shuffled.
pub fn corpus(mix: Mix, seed: u64) -> Vec<(String, String)> {
    let mut r = SplitMix64::new(seed);
    let distinct: Vec<String> = (0..mix.distinct)
        .map(|_| {
            let n = 120 + (r.next_u64() % 200) as usize;
            prose(&mut r, n)
        })
        .collect();
    let mut docs: Vec<(String, String)> =
        distinct.iter().enumerate().map(|(i, t)| (format!("d{i}"), t.clone())).collect();
    for k in 0..mix.exact {
        let j = (r.next_u64() % mix.distinct as u64) as usize;
        docs.push((format!("x{k}-of-d{j}"), distinct[j].clone()));
    }
    for k in 0..mix.near {
        let j = (r.next_u64() % mix.distinct as u64) as usize;
        docs.push((format!("n{k}-of-d{j}"), edit(&mut r, &distinct[j], mix.edit)));
    }
    // Junk documents are distinct from each other (no dedup stage can remove them): only the
    // quality rules catch them.
    let symbols = ["#@!", "$%^", "&*()", "~~~", "<<>>", "|||", "#", "@@", "^^", "%%%"];
    for k in 0..mix.junk {
        let text = match k % 3 {
            0 => format!("Click here to win prize number {k}."),
            1 => (0..80).map(|_| symbols[(r.next_u64() % symbols.len() as u64) as usize]).collect::<Vec<_>>().join(" "),
            _ => format!("Buy the best watches online at the lowest prices today, offer {k}.\n").repeat(30 + k % 7),
        };
        let kind = ["short", "symbols", "repeated"][k % 3];
        docs.push((format!("j{k}-{kind}"), text));
    }
    for i in (1..docs.len()).rev() {
        let j = (r.next_u64() % (i as u64 + 1)) as usize;
        docs.swap(i, j);
    }
    docs
}

/// The corpus as JSONL text.
pub fn jsonl(docs: &[(String, String)]) -> String {
    docs.iter().map(|(id, text)| serde_json::json!({ "id": id, "text": text }).to_string() + "\n").collect()
}
