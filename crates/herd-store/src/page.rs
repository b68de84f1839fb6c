//! Offset pagination for operator lists.

/// Which page of a list to fetch (1-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    pub number: u32,
    pub per_page: u32,
}

impl Page {
    pub const DEFAULT_PER_PAGE: u32 = 25;
    pub const MAX_PER_PAGE: u32 = 100;

    pub fn new(number: Option<u32>, per_page: Option<u32>) -> Self {
        Self {
            number: number.unwrap_or(1).max(1),
            per_page: per_page
                .unwrap_or(Self::DEFAULT_PER_PAGE)
                .clamp(1, Self::MAX_PER_PAGE),
        }
    }

    pub fn offset(self) -> i64 {
        i64::from(self.number - 1) * i64::from(self.per_page)
    }

    /// One more row than shown, to learn whether a next page exists.
    pub fn fetch_limit(self) -> i64 {
        i64::from(self.per_page) + 1
    }

    pub fn finish<T>(self, mut rows: Vec<T>) -> Paged<T> {
        let has_next = rows.len() > self.per_page as usize;
        rows.truncate(self.per_page as usize);
        Paged {
            items: rows,
            page: self,
            has_next,
        }
    }
}

/// One page of results.
#[derive(Debug, Clone)]
pub struct Paged<T> {
    pub items: Vec<T>,
    pub page: Page,
    pub has_next: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clamps_and_detects_next_page() {
        let p = Page::new(Some(0), Some(1000));
        assert_eq!(
            p,
            Page {
                number: 1,
                per_page: 100
            }
        );
        let p = Page::new(Some(3), Some(2));
        assert_eq!(p.offset(), 4);
        assert_eq!(p.fetch_limit(), 3);
        let paged = p.finish(vec![1, 2, 3]);
        assert!(paged.has_next);
        assert_eq!(paged.items, vec![1, 2]);
        assert!(!p.finish(vec![1, 2]).has_next);
    }
}
