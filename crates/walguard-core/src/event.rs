//! The `on_event` events, and which one a decision is.

use crate::decision::Verdict;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// The first hold of a segment (not every retry).
    Held,
    /// The first archive of a segment after it was held.
    Released,
    /// A safety valve archived a held segment.
    Valve,
    /// A listed replica's slot is lost: it can no longer stream what it needs and must
    /// be rebuilt (once, when first seen).
    Lost,
}

impl Event {
    pub fn as_str(self) -> &'static str {
        match self {
            Event::Held => "held",
            Event::Released => "released",
            Event::Valve => "valve",
            Event::Lost => "lost",
        }
    }
}

/// What walguard last decided about the same file, when it knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Previous {
    /// The last attempt held it.
    Held,
    /// The last attempt did anything else (an error, say), or there was none.
    Other,
}

/// Which event `verdict` is, given the previous outcome for the same file. Unknown
/// (`None`) counts as no earlier hold: every hold is then a first one, and nothing is a
/// release, so a `released` event never follows an error or nothing at all.
pub fn of(verdict: &Verdict, previous: Option<Previous>) -> Option<Event> {
    let held_before = previous == Some(Previous::Held);
    if verdict.valve.is_some() {
        Some(Event::Valve)
    } else if verdict.archive {
        held_before.then_some(Event::Released)
    } else {
        (!held_before).then_some(Event::Held)
    }
}

/// The lines lost now that were not lost at the previous decision (`before`): the ones
/// the `lost` event is for.
pub fn newly_lost(now: &[String], before: &[String]) -> Vec<String> {
    now.iter()
        .filter(|e| !before.contains(e))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::Tripped;

    #[test]
    fn events_follow_the_previous_outcome() {
        let archived = Verdict {
            archive: true,
            ..hold()
        };
        let valve = Verdict {
            archive: true,
            valve: Some(Tripped {
                valve: "max_hold",
                detail: String::new(),
            }),
            ..hold()
        };
        let cases = [
            (hold(), None, Some(Event::Held)),
            (hold(), Some(Previous::Other), Some(Event::Held)),
            (hold(), Some(Previous::Held), None),
            (
                archived.clone(),
                Some(Previous::Held),
                Some(Event::Released),
            ),
            (archived.clone(), Some(Previous::Other), None),
            (archived, None, None),
            (valve.clone(), Some(Previous::Held), Some(Event::Valve)),
            (valve, None, Some(Event::Valve)),
        ];
        for (verdict, previous, want) in cases {
            assert_eq!(
                of(&verdict, previous),
                want,
                "{previous:?} {}",
                verdict.archive
            );
        }
    }

    #[test]
    fn lost_is_news_once() {
        let now = vec!["app:r2".to_string(), "app:r3".to_string()];
        assert_eq!(newly_lost(&now, &[]), now);
        assert_eq!(newly_lost(&now, &["app:r2".into()]), vec!["app:r3"]);
        assert!(newly_lost(&now, &now).is_empty());
    }

    fn hold() -> Verdict {
        crate::decision::decide(
            &"000000010000000000000003".parse().unwrap(),
            None,
            &Default::default(),
            &[],
            &Default::default(),
            &Default::default(),
        )
    }
}
