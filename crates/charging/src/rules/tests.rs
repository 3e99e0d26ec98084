use super::spec::{Names, NumberOrText, compile, compile_all, personal_account};
use super::*;

fn names() -> (Vec<&'static str>, Zones) {
    (
        vec!["roaming-eu"],
        Zones(vec![("eu".into(), vec!["208".into(), "262".into()])]),
    )
}

fn rule(toml_text: &str) -> Result<Rule, String> {
    let spec: RuleSpec = toml::from_str(toml_text).map_err(|e| e.to_string())?;
    let (tariffs, zones) = names();
    compile(
        &spec,
        &Names {
            tariffs,
            zones: &zones,
        },
    )
}

#[test]
fn conditions_match_as_written() {
    let r = rule(
        r#"name = "video"
           rating_groups = [20, "30-39"]
           apn = ["internet", "*.corp.example"]
           rat_types = ["EUTRAN", 10]
           charge = "personal""#,
    )
    .unwrap();
    let mut f = Facts {
        rating_group: Some(35),
        apn: Some("VPN.Corp.Example"),
        rat: Some(6),
        ..Facts::default()
    };
    assert!(r.matches(&f));
    f.rating_group = Some(21);
    assert!(!r.matches(&f), "21 is in no range");
    f.rating_group = Some(20);
    f.apn = Some("corp.example");
    assert!(!r.matches(&f), "*.corp.example needs a label before");
    f.apn = Some("Internet");
    f.rat = Some(2);
    assert!(!r.matches(&f), "GERAN");
    f.rat = None;
    assert!(!r.matches(&f), "a condition on an absent attribute fails");
    assert_eq!(r.action, Action::Personal);
}

#[test]
fn roaming_zones_and_serving_networks() {
    let r = rule(
        r#"name = "eu-roaming"
           roaming = true
           zones = ["eu"]
           charge = "tariff"
           tariff = "roaming-eu""#,
    )
    .unwrap();
    let zones = names().1;
    let fr = Plmn::parse("20801").unwrap();
    let f = Facts {
        serving: Some(fr),
        zone: zones.of(fr),
        roaming: true,
        ..Facts::default()
    };
    assert!(r.matches(&f));
    assert!(!r.matches(&Facts {
        roaming: false,
        ..f
    }));
    let us = Plmn::parse("310410").unwrap();
    assert!(!r.matches(&Facts {
        serving: Some(us),
        zone: zones.of(us),
        ..f
    }));
    let s = rule(
        r#"name = "fr"
                    serving_networks = ["208"]
                    charge = "deny""#,
    )
    .unwrap();
    assert!(s.matches(&f));
}

#[test]
fn time_windows_days_and_edges() {
    // Weekdays 08:00-18:00, and nights 22:00-06:00 any day.
    let work = rule(
        r#"name = "work"
           days = ["mon-fri"]
           hours = ["08:00-18:00"]
           charge = "corporate""#,
    )
    .unwrap();
    let night = rule(
        r#"name = "night"
           hours = ["22:00-06:00"]
           charge = "personal""#,
    )
    .unwrap();
    let at = |day: u8, h: u32, m: u32| Facts {
        local: Some((day, h * 3600 + m * 60)),
        ..Facts::default()
    };
    assert!(work.matches(&at(0, 8, 0)));
    assert!(!work.matches(&at(0, 18, 0)), "the end is excluded");
    assert!(!work.matches(&at(5, 9, 0)), "Saturday");
    assert!(night.matches(&at(3, 23, 30)) && night.matches(&at(3, 5, 59)));
    assert!(!night.matches(&at(3, 6, 0)));
    assert!(
        !work.matches(&Facts::default()),
        "no local time: a timed rule fails"
    );
    let list = [work.clone(), night.clone()];
    let chain: Vec<&[Rule]> = vec![&list];
    // 17:59:30: the next edge is 18:00, 30 s away.
    assert_eq!(next_edge(&chain, 17 * 3600 + 59 * 60 + 30), Some(30));
    // 23:00: midnight (the days of `work`) is next.
    assert_eq!(next_edge(&chain, 23 * 3600), Some(3600));
    let untimed = [rule(
        r#"name = "x"
                        charge = "deny""#,
    )
    .unwrap()];
    assert_eq!(next_edge(&[&untimed], 0), None);
    // Friday to Monday wraps.
    let weekend = rule(
        r#"name = "w"
                          days = ["sat-sun"]
                          charge = "deny""#,
    )
    .unwrap();
    assert!(weekend.matches(&at(6, 12, 0)) && !weekend.matches(&at(0, 12, 0)));
    let late = rule(
        r#"name = "l"
                       hours = ["23:00-24:00"]
                       charge = "deny""#,
    )
    .unwrap();
    assert!(late.matches(&at(1, 23, 59)) && !late.matches(&at(1, 0, 0)));
}

#[test]
fn bad_rules_say_why() {
    for (text, why) in [
        (
            r#"name = "a"
            charge = "nobody""#,
            "charge 'nobody'",
        ),
        (
            r#"name = "a"
            charge = "tariff""#,
            "needs tariff",
        ),
        (
            r#"name = "a"
            charge = "tariff"
            tariff = "gold""#,
            "tariff 'gold'",
        ),
        (
            r#"name = "a"
            zones = ["asia"]
            charge = "deny""#,
            "zone 'asia'",
        ),
        (
            r#"name = "a"
            rating_groups = ["9-3"]
            charge = "deny""#,
            "ends before",
        ),
        (
            r#"name = "a"
            rating_groups = [4294967296]
            charge = "deny""#,
            "too large",
        ),
        (
            r#"name = "a"
            hours = ["25:00-26:00"]
            charge = "deny""#,
            "not a time",
        ),
        (
            r#"name = "a"
            days = ["funday"]
            charge = "deny""#,
            "funday",
        ),
        (
            r#"name = "a"
            rat_types = ["6G"]
            charge = "deny""#,
            "'6G'",
        ),
        (
            r#"name = "a"
            serving_networks = ["2"]
            charge = "deny""#,
            "serving_networks",
        ),
        (
            r#"name = ""
            charge = "deny""#,
            "rule",
        ),
    ] {
        let e = rule(text).unwrap_err();
        assert!(e.contains(why), "{text}: {e}");
    }
    let (tariffs, zones) = names();
    let n = Names {
        tariffs,
        zones: &zones,
    };
    let twice: Vec<RuleSpec> = (0..2)
        .map(|_| toml::from_str("name = \"a\"\ncharge = \"deny\"").unwrap())
        .collect();
    assert!(compile_all(&twice, &n).unwrap_err().contains("named twice"));
    assert!(personal_account("foo:bar").is_err());
    assert_eq!(
        personal_account("15559990001").unwrap(),
        (SubscriptionType::E164, "15559990001".into())
    );
    assert_eq!(
        personal_account("sip:bob@example.com").unwrap(),
        (SubscriptionType::SipUri, "sip:bob@example.com".into())
    );
    let _ = NumberOrText::Number(1);
}

#[test]
fn a_device_s_own_rules_come_first_then_upwards() {
    let mut book = RuleBook::default();
    let deny = rule("name = \"top\"\ncharge = \"deny\"").unwrap();
    let personal = rule("name = \"own\"\nrating_groups = [20]\ncharge = \"personal\"").unwrap();
    book.set("acme", vec![deny]);
    book.set("acme/eng/phone", vec![personal]);
    let chain = book.chain(&["acme", "eng", "phone"]);
    assert_eq!(chain.len(), 2);
    let f = |rg| Facts {
        rating_group: Some(rg),
        ..Facts::default()
    };
    assert_eq!(&*decide(&chain, &f(20)).unwrap().name, "own");
    assert_eq!(&*decide(&chain, &f(10)).unwrap().name, "top");
    assert!(book.chain(&["other", "x"]).is_empty());
    book.set("acme", Vec::new());
    assert!(decide(&book.chain(&["acme", "eng", "x"]), &f(20)).is_none());
}
