//! The tables `mesh stat`, `mesh edges` and `mesh routes` print, and how their cells
//! show numbers, as Linkerd's viz commands show them: `96.67%`, `2.0rps`, `3ms`, and
//! `-` for what there is nothing to show of.

use std::fmt::Write as _;

/// Columns padded to their widest cell, three spaces apart, no trailing spaces.
pub(crate) fn render(header: &[&str], rows: &[Vec<String>]) -> String {
    let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    let widths: Vec<usize> = (0..header.len())
        .map(|c| {
            std::iter::once(&header)
                .chain(rows)
                .map(|r| r.get(c).map_or(0, |cell| cell.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (cell, width) in row.iter().zip(&widths) {
            let _ = write!(line, "{cell:<width$}   ");
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// A success rate (0..=1) as a percentage; `-` without responses.
pub(crate) fn percent(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{:.2}%", v * 100.0))
}

/// Requests per second; `-` when there were no responses to count.
pub(crate) fn rps(v: f64, any: bool) -> String {
    if any {
        format!("{v:.1}rps")
    } else {
        "-".into()
    }
}

/// A latency in whole milliseconds; `-` without one.
pub(crate) fn ms(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{}ms", v.round()))
}

/// Bytes per second, one decimal.
pub(crate) fn bytes_per_second(v: f64) -> String {
    format!("{v:.1}B/s")
}

/// `-` for a missing value, else the value.
pub(crate) fn or_dash(v: Option<&str>) -> String {
    v.unwrap_or("-").to_string()
}

/// A JSON document as commands print it: pretty, with a final newline.
pub(crate) fn json(doc: &serde_json::Value) -> String {
    let mut out = serde_json::to_string_pretty(doc).unwrap_or_else(|_| doc.to_string());
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pads_columns_to_the_widest_cell() {
        let rows = vec![
            vec!["web".to_string(), "100.00%".to_string()],
            vec!["voting-long".to_string(), "-".to_string()],
        ];
        assert_eq!(
            render(&["NAME", "SUCCESS"], &rows),
            "NAME          SUCCESS\nweb           100.00%\nvoting-long   -\n"
        );
        assert_eq!(percent(Some(0.96666)), "96.67%");
        assert_eq!(percent(None), "-");
        assert_eq!(rps(1.96, true), "2.0rps");
        assert_eq!(rps(0.0, false), "-");
        assert_eq!(ms(Some(2.5)), "3ms");
        assert_eq!(ms(Some(0.2)), "0ms");
        assert_eq!(ms(None), "-");
        assert_eq!(bytes_per_second(1234.56), "1234.6B/s");
    }
}
