//! The records the simulated PortaBilling starts with.
//!
//! Account 2984, customer 2543, invoice 7001 and DID 16045550123 are the examples of
//! PortaOne's API documentation (account 2984 carries service features too). The others are
//! made up to match PortaOne's ESPF event examples and to be consistent with each other:
//! customer 6392 owns accounts 1000889 and 277147, invoice 450013 and DID 12065550123, which
//! is assigned to account 1000889; account 277147 has the account ID `79123456789@msisdn`, for
//! status reports by account ID (`POST /espf/v1/account/<id>/status`). Every account has an `h323_password` (made up; the SIP/RADIUS password a
//! connector such as `contrib/connectors/freeradius-users.sh` provisions); Cascade's line
//! 1000890 is blocked (`blocked: "Y"`) and its line 1000891 is terminated (`bill_status: "C"`,
//! blocked too, as PortaBilling shows closed accounts), so that a connector can be rehearsed
//! against each state.
//!
//! Not a PortaBilling data model: a record is whatever JSON the API returns for it, and tests
//! change them through `Sim::put_*` / `Sim::remove_*`, an operator through
//! `POST`/`DELETE /_sim/account/<i_account>`.

use std::collections::HashMap;

use serde_json::{json, Value};

/// Accounts by `i_account`.
pub(super) fn accounts() -> HashMap<i64, Value> {
    // Built in three steps: one json! call would exceed the macro's recursion limit.
    let mut spec_2984 = json!({
        "i_account": 2984,
        "id": "6808881050@msisdn",
        "i_customer": 2543,
        "customer_name": "PP Mobile test",
        "i_product": 60,
        "product_name": "Mobile residential",
        "product_visible_name": "PTWaves mobile for residents",
        "billing_model": 1,
        "i_account_role": 8,
        "bill_status": "O",
        "blocked": "N",
        "customer_bill_status": "O",
        "customer_blocked": "N",
        "customer_bill_suspended": 0,
        "balance": 20.98506,
        "credit_limit": null,
        "opening_balance": 0,
        "iso_4217": "USD",
        "activation_date": "2023-05-12",
        "expiration_date": null,
        "issue_date": "2023-05-11",
        "first_usage": "2023-05-11",
        "last_usage": "2023-05-26 17:19:16",
        "life_time": null,
        "idle_days": 0,
        "i_time_zone": 268,
        "time_zone_name": "Pacific/Palau",
        "i_lang": "en",
        "email": "subscriber@example.com",
        "firstname": "Ana",
        "lastname": "Lopez",
        "phone1": "",
        "companyname": "",
        "note": "",
        "h323_password": "mx7Qa2pL"
    });
    spec_2984["assigned_addons"] = json!([
        {
            "i_product": 86,
            "name": "Unli Data daily",
            "end_user_name": "Unlimited Mobile Data DAILY",
            "addon_effective_from": "2023-05-15 09:34:58",
            "addon_effective_to": "2023-05-31 14:59:59",
            "addon_priority": 30,
            "i_vd_plan": 48,
            "iso_4217": "USD"
        }
    ]);
    spec_2984["service_features"] = json!([
        {"name": "unified_messaging", "flag_value": "~", "effective_flag_value": "N",
         "locked": 0, "locks": ["user"],
         "attributes": [
             {"name": "mailbox_limit", "values": ["10"], "effective_values": ["0"]},
             {"name": "fax_only_mode", "values": ["N"], "effective_values": ["N"]}
         ]},
        {"name": "default_action", "flag_value": "7", "effective_flag_value": "7",
         "locked": 0, "locks": [], "attributes": []},
        {"name": "wifi_speed_limit", "flag_value": "~", "effective_flag_value": null,
         "locked": 0, "locks": [], "attributes": []},
        {"name": "voice_roaming_protection", "flag_value": "N", "effective_flag_value": "N",
         "locked": 0, "locks": [], "attributes": []},
        {"name": "netaccess_policy", "flag_value": "~", "effective_flag_value": "Y",
         "locked": 0, "locks": [], "attributes": []}
    ]);
    let sip_1000889 = json!({
        "i_account": 1000889,
        "id": "12065550100",
        "i_customer": 6392,
        "customer_name": "Cascade Networks LLC",
        "i_product": 71,
        "product_name": "SIP business line",
        "product_visible_name": "Cascade SIP line",
        "billing_model": 1,
        "i_account_role": 2,
        "bill_status": "O",
        "blocked": "N",
        "customer_bill_status": "O",
        "customer_blocked": "N",
        "customer_bill_suspended": 0,
        "balance": 12.5,
        "credit_limit": 100,
        "opening_balance": 0,
        "iso_4217": "USD",
        "activation_date": "2024-02-01",
        "expiration_date": null,
        "issue_date": "2024-01-30",
        "i_time_zone": 361,
        "time_zone_name": "America/Los_Angeles",
        "i_lang": "en",
        "email": "frontdesk@cascade.example.com",
        "firstname": "Sam",
        "lastname": "Okafor",
        "phone1": "12065550100",
        "companyname": "Cascade Networks LLC",
        "note": "",
        "h323_password": "c4sc4de-0100",
        "assigned_addons": []
    });
    // Cascade's second and third lines: one blocked, one terminated.
    let mut blocked_1000890 = sip_1000889.clone();
    blocked_1000890["i_account"] = json!(1000890);
    blocked_1000890["id"] = json!("12065550101");
    blocked_1000890["phone1"] = json!("12065550101");
    blocked_1000890["blocked"] = json!("Y");
    blocked_1000890["h323_password"] = json!("c4sc4de-0101");
    let mut closed_1000891 = sip_1000889.clone();
    closed_1000891["i_account"] = json!(1000891);
    closed_1000891["id"] = json!("12065550102");
    closed_1000891["phone1"] = json!("12065550102");
    closed_1000891["bill_status"] = json!("C");
    closed_1000891["blocked"] = json!("Y");
    closed_1000891["h323_password"] = json!("c4sc4de-0102");
    let mobile_277147 = json!({
        "i_account": 277147,
        "id": "79123456789@msisdn",
        "i_customer": 6392,
        "customer_name": "Cascade Networks LLC",
        "i_product": 60,
        "product_name": "Mobile residential",
        "product_visible_name": "PTWaves mobile for residents",
        "billing_model": -1,
        "i_account_role": 8,
        "bill_status": "O",
        "blocked": "N",
        "customer_bill_status": "O",
        "customer_blocked": "N",
        "customer_bill_suspended": 0,
        "balance": 4.25,
        "credit_limit": null,
        "opening_balance": 10,
        "iso_4217": "USD",
        "activation_date": "2025-04-28",
        "expiration_date": null,
        "issue_date": "2025-04-28",
        "i_time_zone": 361,
        "time_zone_name": "America/Los_Angeles",
        "i_lang": "en",
        "email": "",
        "firstname": "Lee",
        "lastname": "Park",
        "phone1": "",
        "companyname": "",
        "note": "",
        "h323_password": "Lp0rk-7147",
        "assigned_addons": []
    });
    [
        spec_2984,
        sip_1000889,
        blocked_1000890,
        closed_1000891,
        mobile_277147,
    ]
    .into_iter()
    .filter_map(|a| Some((a.get("i_account")?.as_i64()?, a)))
    .collect()
}

/// Customers by `i_customer`.
pub(super) fn customers() -> HashMap<i64, Value> {
    let spec_2543 = json!({
        "i_customer": 2543,
        "name": "PP Mobile test",
        "bill_status": "O",
        "blocked": "N",
        "balance": 37.61,
        "credit_limit": 50,
        "opening_balance": 0,
        "iso_4217": "USD",
        "i_customer_type": 1,
        "i_balance_control_type": 1,
        "i_office_type": 1,
        "creation_date": "2023-03-20 07:38:17",
        "billed_to": "2023-04-30 15:00:00",
        "next_billed_to": "2023-05-31 15:00:00",
        "firstname": "",
        "lastname": "",
        "phone1": "6808801279",
        "note": ""
    });
    let cascade_6392 = json!({
        "i_customer": 6392,
        "name": "Cascade Networks LLC",
        "bill_status": "O",
        "blocked": "N",
        "balance": 142.8,
        "credit_limit": 500,
        "opening_balance": 0,
        "iso_4217": "USD",
        "i_customer_type": 1,
        "i_balance_control_type": 1,
        "i_office_type": 1,
        "creation_date": "2024-01-30 18:02:44",
        "billed_to": "2025-04-30 07:00:00",
        "next_billed_to": "2025-05-31 07:00:00",
        "firstname": "Sam",
        "lastname": "Okafor",
        "phone1": "12065550100",
        "city": "Seattle",
        "country": "US",
        "zip": "98101",
        "note": ""
    });
    [spec_2543, cascade_6392]
        .into_iter()
        .filter_map(|c| Some((c.get("i_customer")?.as_i64()?, c)))
        .collect()
}

/// Invoices by `i_invoice`.
pub(super) fn invoices() -> HashMap<i64, Value> {
    let spec_7001 = json!({
        "i_invoice": 7001,
        "i_customer": 2543,
        "invoice_number": "INV-2023-0042",
        "issue_date": "2023-05-01",
        "period_from": "2023-04-01 00:00:00",
        "period_to": "2023-04-30 23:59:59",
        "due_date": "2023-05-15",
        "amount_net": 35.0,
        "amount_due": 37.61,
        "amount_paid": 0,
        "iso_4217": "USD",
        "i_invoice_status": 1,
        "invoice_status_desc": "Open"
    });
    let cascade_450013 = json!({
        "i_invoice": 450013,
        "i_customer": 6392,
        "invoice_number": "CN-2025-0417",
        "issue_date": "2025-05-01",
        "period_from": "2025-04-01 07:00:00",
        "period_to": "2025-04-30 06:59:59",
        "due_date": "2025-05-21",
        "amount_net": 128.0,
        "amount_due": 142.8,
        "amount_paid": 142.8,
        "iso_4217": "USD",
        "i_invoice_status": 3,
        "invoice_status_desc": "Paid"
    });
    [spec_7001, cascade_450013]
        .into_iter()
        .filter_map(|i| Some((i.get("i_invoice")?.as_i64()?, i)))
        .collect()
}

/// DID numbers, as `DID/get_number_list` elements.
pub(super) fn dids() -> Vec<Value> {
    vec![
        json!({"i_did_number": 501, "number": "16045550123", "i_customer": 2543,
               "i_master_account": 2984, "frozen": "N", "description": ""}),
        json!({"i_did_number": 502, "number": "12065550123", "i_customer": 6392,
               "i_master_account": 1000889, "frozen": "N", "description": "Cascade main line"}),
    ]
}

/// SIM cards, as `SIMCard/get_card_list` elements. PortaOne's method and field names here
/// are not in public code (spec notes: inferred); the simulator, the shipped templates and
/// the tests agree on them. The MSISDN is the linked account's ID.
pub(super) fn sim_cards() -> Vec<Value> {
    vec![
        json!({"i_sim_card": 9001, "imsi": "250991234567890", "iccid": "8970199123456789012",
               "msisdn": "79123456789", "status": "used", "i_account": 277147}),
        json!({"i_sim_card": 9002, "imsi": "250991234567891", "iccid": "8970199123456789013",
               "msisdn": "6808881050", "status": "used", "i_account": 2984}),
        json!({"i_sim_card": 9003, "imsi": "250991234567892", "iccid": "8970199123456789014",
               "msisdn": "", "status": "available", "i_account": null}),
    ]
}
