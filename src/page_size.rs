//! How many rows (or entries) the next page of a scan asks for: a keyset scan of a table
//! (`load`, `verify`), or an XA stash read back at its commit.
//!
//! Why not a fixed page: a page of a thousand rows is right for narrow rows and a
//! gigabyte for rows holding megabyte documents, all of it in memory at once (the rows,
//! then the values rendered from them). So a scan starts with one row and lets the
//! page grow, at most doubling each time, as long as the rows read so far say a page
//! stays within a byte budget (`sink.max_bytes_per_step`); a page that went over it
//! shrinks the next one to what would have fitted.

/// Rows of a scan's first page: one, as wide as a row may be. A table of narrow rows
/// reaches full pages of a thousand after ten pages.
const FIRST: usize = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageSize {
    rows: usize,
    max: usize,
    budget: usize,
}

impl PageSize {
    /// Pages of at most `max` rows and, as far as the widths seen tell, `budget` bytes.
    pub fn new(max: usize, budget: usize) -> Self {
        PageSize {
            rows: FIRST.min(max).max(1),
            max: max.max(1),
            budget: budget.max(1),
        }
    }

    /// Rows to ask for.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Sizes the next page after one of `rows()` rows whose values took `bytes`.
    pub fn read(&mut self, bytes: usize) {
        let per_row = (bytes / self.rows).max(1);
        let fits = (self.budget / per_row).max(1);
        self.rows = fits.min(self.rows * 2).min(self.max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn narrow_rows_reach_full_pages_in_a_few_steps() {
        let mut page = PageSize::new(1000, 8 << 20);
        let mut sizes = vec![page.rows()];
        while page.rows() < 1000 {
            page.read(page.rows() * 200);
            sizes.push(page.rows());
        }
        assert_eq!(sizes, vec![1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000]);
    }

    #[test]
    fn wide_rows_stay_within_the_budget() {
        let mut page = PageSize::new(1000, 8 << 20);
        for _ in 0..10 {
            page.read(page.rows() << 20); // 1 MiB a row
        }
        assert_eq!(page.rows(), 8);
        page.read(page.rows() * (64 << 20)); // rows wider than the whole budget
        assert_eq!(page.rows(), 1, "never fewer than one row");
        page.read(100); // narrow again: grows back
        assert_eq!(page.rows(), 2);
    }

    #[test]
    fn the_maximum_caps_growth() {
        let mut page = PageSize::new(5, 1 << 20);
        let mut sizes = vec![page.rows()];
        for _ in 0..4 {
            page.read(page.rows());
            sizes.push(page.rows());
        }
        assert_eq!(sizes, vec![1, 2, 4, 5, 5]);
        assert_eq!(PageSize::new(0, 0).rows(), 1);
    }
}
