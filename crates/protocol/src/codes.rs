//! Command codes, Application-Ids, AVP codes and Result-Codes used by the code (RFC 6733,
//! RFC 4006, 3GPP TS 32.299). Every AVP constant here is checked against the shipped dictionary
//! files by a test, so the two cannot drift apart.

/// The IETF "vendor" (no V bit).
pub(crate) const VENDOR_IETF: u32 = 0;
/// 3GPP (IANA enterprise 10415).
pub const VENDOR_3GPP: u32 = 10415;

/// Application-Ids (RFC 6733 §2.4, RFC 4006 §1.3).
pub mod application {
    pub(crate) const COMMON_MESSAGES: u32 = 0;
    pub const CREDIT_CONTROL: u32 = 4;
    /// Sy (3GPP TS 29.219): the OCS side towards a PCRF.
    pub const SY: u32 = 16777302;
    pub(crate) const RELAY: u32 = 0xffff_ffff;
}

/// Command codes (RFC 6733 §3.1, RFC 4006 §3).
pub mod command {
    pub const CAPABILITIES_EXCHANGE: u32 = 257;
    pub const RE_AUTH: u32 = 258;
    pub const ACCOUNTING: u32 = 271;
    pub const CREDIT_CONTROL: u32 = 272;
    pub const ABORT_SESSION: u32 = 274;
    pub const SESSION_TERMINATION: u32 = 275;
    pub const DEVICE_WATCHDOG: u32 = 280;
    pub const DISCONNECT_PEER: u32 = 282;
    /// Sy Spending-Limit-Request/Answer.
    pub const SPENDING_LIMIT: u32 = 8388635;
    /// Sy Spending-Status-Notification-Request/Answer.
    pub const SPENDING_STATUS_NOTIFICATION: u32 = 8388636;
}

/// An AVP as the code uses it: its dictionary name, code, vendor and whether we set the M bit
/// when we send it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AvpCode {
    pub name: &'static str,
    pub code: u32,
    pub vendor_id: u32,
    pub mandatory: bool,
}

macro_rules! avp_codes {
    ($( $konst:ident = ($name:literal, $code:literal, $vendor:expr, $m:literal); )*) => {
        $( pub const $konst: AvpCode = AvpCode { name: $name, code: $code, vendor_id: $vendor, mandatory: $m }; )*
        /// Every AVP constant above, for the dictionary cross-check.
        pub const ALL: &[AvpCode] = &[ $( $konst ),* ];
    };
}

/// AVP codes.
pub mod avp {
    use super::{AvpCode, VENDOR_3GPP, VENDOR_IETF};
    avp_codes! {
        // RFC 6733 base protocol
        USER_NAME = ("User-Name", 1, VENDOR_IETF, true);
        CLASS = ("Class", 25, VENDOR_IETF, true);
        SESSION_TIMEOUT = ("Session-Timeout", 27, VENDOR_IETF, true);
        PROXY_STATE = ("Proxy-State", 33, VENDOR_IETF, true);
        EVENT_TIMESTAMP = ("Event-Timestamp", 55, VENDOR_IETF, true);
        HOST_IP_ADDRESS = ("Host-IP-Address", 257, VENDOR_IETF, true);
        AUTH_APPLICATION_ID = ("Auth-Application-Id", 258, VENDOR_IETF, true);
        ACCT_APPLICATION_ID = ("Acct-Application-Id", 259, VENDOR_IETF, true);
        VENDOR_SPECIFIC_APPLICATION_ID = ("Vendor-Specific-Application-Id", 260, VENDOR_IETF, true);
        SESSION_ID = ("Session-Id", 263, VENDOR_IETF, true);
        ORIGIN_HOST = ("Origin-Host", 264, VENDOR_IETF, true);
        SUPPORTED_VENDOR_ID = ("Supported-Vendor-Id", 265, VENDOR_IETF, true);
        VENDOR_ID = ("Vendor-Id", 266, VENDOR_IETF, true);
        FIRMWARE_REVISION = ("Firmware-Revision", 267, VENDOR_IETF, false);
        RESULT_CODE = ("Result-Code", 268, VENDOR_IETF, true);
        PRODUCT_NAME = ("Product-Name", 269, VENDOR_IETF, false);
        DISCONNECT_CAUSE = ("Disconnect-Cause", 273, VENDOR_IETF, true);
        AUTH_REQUEST_TYPE = ("Auth-Request-Type", 274, VENDOR_IETF, true);
        AUTH_SESSION_STATE = ("Auth-Session-State", 277, VENDOR_IETF, true);
        ORIGIN_STATE_ID = ("Origin-State-Id", 278, VENDOR_IETF, true);
        FAILED_AVP = ("Failed-AVP", 279, VENDOR_IETF, true);
        PROXY_HOST = ("Proxy-Host", 280, VENDOR_IETF, true);
        ERROR_MESSAGE = ("Error-Message", 281, VENDOR_IETF, false);
        ROUTE_RECORD = ("Route-Record", 282, VENDOR_IETF, true);
        DESTINATION_REALM = ("Destination-Realm", 283, VENDOR_IETF, true);
        PROXY_INFO = ("Proxy-Info", 284, VENDOR_IETF, true);
        RE_AUTH_REQUEST_TYPE = ("Re-Auth-Request-Type", 285, VENDOR_IETF, true);
        DESTINATION_HOST = ("Destination-Host", 293, VENDOR_IETF, true);
        ERROR_REPORTING_HOST = ("Error-Reporting-Host", 294, VENDOR_IETF, false);
        TERMINATION_CAUSE = ("Termination-Cause", 295, VENDOR_IETF, true);
        ORIGIN_REALM = ("Origin-Realm", 296, VENDOR_IETF, true);
        EXPERIMENTAL_RESULT = ("Experimental-Result", 297, VENDOR_IETF, true);
        EXPERIMENTAL_RESULT_CODE = ("Experimental-Result-Code", 298, VENDOR_IETF, true);
        INBAND_SECURITY_ID = ("Inband-Security-Id", 299, VENDOR_IETF, true);
        // RFC 7155 (NASREQ) AVPs used by Gy
        FILTER_ID = ("Filter-Id", 11, VENDOR_IETF, true);
        CALLED_STATION_ID = ("Called-Station-Id", 30, VENDOR_IETF, true);
        // RFC 4006 credit control
        CC_CORRELATION_ID = ("CC-Correlation-Id", 411, VENDOR_IETF, false);
        CC_INPUT_OCTETS = ("CC-Input-Octets", 412, VENDOR_IETF, true);
        CC_MONEY = ("CC-Money", 413, VENDOR_IETF, true);
        CC_OUTPUT_OCTETS = ("CC-Output-Octets", 414, VENDOR_IETF, true);
        CC_REQUEST_NUMBER = ("CC-Request-Number", 415, VENDOR_IETF, true);
        CC_REQUEST_TYPE = ("CC-Request-Type", 416, VENDOR_IETF, true);
        CC_SERVICE_SPECIFIC_UNITS = ("CC-Service-Specific-Units", 417, VENDOR_IETF, true);
        CC_SESSION_FAILOVER = ("CC-Session-Failover", 418, VENDOR_IETF, true);
        CC_TIME = ("CC-Time", 420, VENDOR_IETF, true);
        CC_TOTAL_OCTETS = ("CC-Total-Octets", 421, VENDOR_IETF, true);
        CHECK_BALANCE_RESULT = ("Check-Balance-Result", 422, VENDOR_IETF, true);
        COST_INFORMATION = ("Cost-Information", 423, VENDOR_IETF, true);
        COST_UNIT = ("Cost-Unit", 424, VENDOR_IETF, true);
        CURRENCY_CODE = ("Currency-Code", 425, VENDOR_IETF, true);
        CREDIT_CONTROL_FAILURE_HANDLING = ("Credit-Control-Failure-Handling", 427, VENDOR_IETF, true);
        EXPONENT = ("Exponent", 429, VENDOR_IETF, true);
        FINAL_UNIT_INDICATION = ("Final-Unit-Indication", 430, VENDOR_IETF, true);
        GRANTED_SERVICE_UNIT = ("Granted-Service-Unit", 431, VENDOR_IETF, true);
        RATING_GROUP = ("Rating-Group", 432, VENDOR_IETF, true);
        REDIRECT_ADDRESS_TYPE = ("Redirect-Address-Type", 433, VENDOR_IETF, true);
        REDIRECT_SERVER = ("Redirect-Server", 434, VENDOR_IETF, true);
        REDIRECT_SERVER_ADDRESS = ("Redirect-Server-Address", 435, VENDOR_IETF, true);
        REQUESTED_ACTION = ("Requested-Action", 436, VENDOR_IETF, true);
        REQUESTED_SERVICE_UNIT = ("Requested-Service-Unit", 437, VENDOR_IETF, true);
        RESTRICTION_FILTER_RULE = ("Restriction-Filter-Rule", 438, VENDOR_IETF, true);
        SERVICE_IDENTIFIER = ("Service-Identifier", 439, VENDOR_IETF, true);
        SUBSCRIPTION_ID = ("Subscription-Id", 443, VENDOR_IETF, true);
        SUBSCRIPTION_ID_DATA = ("Subscription-Id-Data", 444, VENDOR_IETF, true);
        UNIT_VALUE = ("Unit-Value", 445, VENDOR_IETF, true);
        USED_SERVICE_UNIT = ("Used-Service-Unit", 446, VENDOR_IETF, true);
        VALUE_DIGITS = ("Value-Digits", 447, VENDOR_IETF, true);
        VALIDITY_TIME = ("Validity-Time", 448, VENDOR_IETF, true);
        FINAL_UNIT_ACTION = ("Final-Unit-Action", 449, VENDOR_IETF, true);
        SUBSCRIPTION_ID_TYPE = ("Subscription-Id-Type", 450, VENDOR_IETF, true);
        MULTIPLE_SERVICES_INDICATOR = ("Multiple-Services-Indicator", 455, VENDOR_IETF, true);
        MULTIPLE_SERVICES_CREDIT_CONTROL = ("Multiple-Services-Credit-Control", 456, VENDOR_IETF, true);
        USER_EQUIPMENT_INFO = ("User-Equipment-Info", 458, VENDOR_IETF, false);
        SERVICE_CONTEXT_ID = ("Service-Context-Id", 461, VENDOR_IETF, true);
        // 3GPP TS 32.299 / TS 29.061
        THREEGPP_CHARGING_ID = ("3GPP-Charging-Id", 2, VENDOR_3GPP, true);
        THREEGPP_SGSN_MCC_MNC = ("3GPP-SGSN-MCC-MNC", 18, VENDOR_3GPP, true);
        THREEGPP_RAT_TYPE = ("3GPP-RAT-Type", 21, VENDOR_3GPP, true);
        THREEGPP_USER_LOCATION_INFO = ("3GPP-User-Location-Info", 22, VENDOR_3GPP, true);
        TIME_QUOTA_THRESHOLD = ("Time-Quota-Threshold", 868, VENDOR_3GPP, true);
        VOLUME_QUOTA_THRESHOLD = ("Volume-Quota-Threshold", 869, VENDOR_3GPP, true);
        TRIGGER_TYPE = ("Trigger-Type", 870, VENDOR_3GPP, true);
        QUOTA_HOLDING_TIME = ("Quota-Holding-Time", 871, VENDOR_3GPP, true);
        REPORTING_REASON = ("Reporting-Reason", 872, VENDOR_3GPP, true);
        SERVICE_INFORMATION = ("Service-Information", 873, VENDOR_3GPP, true);
        PS_INFORMATION = ("PS-Information", 874, VENDOR_3GPP, true);
        QUOTA_CONSUMPTION_TIME = ("Quota-Consumption-Time", 881, VENDOR_3GPP, true);
        UNIT_QUOTA_THRESHOLD = ("Unit-Quota-Threshold", 1226, VENDOR_3GPP, true);
        TRIGGER = ("Trigger", 1264, VENDOR_3GPP, true);
        // 3GPP TS 29.219 Sy
        POLICY_COUNTER_IDENTIFIER = ("Policy-Counter-Identifier", 2901, VENDOR_3GPP, true);
        POLICY_COUNTER_STATUS = ("Policy-Counter-Status", 2902, VENDOR_3GPP, true);
        POLICY_COUNTER_STATUS_REPORT = ("Policy-Counter-Status-Report", 2903, VENDOR_3GPP, true);
        SL_REQUEST_TYPE = ("SL-Request-Type", 2904, VENDOR_3GPP, true);
        SN_REQUEST_TYPE = ("SN-Request-Type", 2907, VENDOR_3GPP, true);
        // RFC 7683 DOIC: sent without the M bit (its §7.7), so a peer that does not know them
        // ignores them.
        OC_SUPPORTED_FEATURES = ("OC-Supported-Features", 621, VENDOR_IETF, false);
        OC_FEATURE_VECTOR = ("OC-Feature-Vector", 622, VENDOR_IETF, false);
        OC_OLR = ("OC-OLR", 623, VENDOR_IETF, false);
        OC_SEQUENCE_NUMBER = ("OC-Sequence-Number", 624, VENDOR_IETF, false);
        OC_VALIDITY_DURATION = ("OC-Validity-Duration", 625, VENDOR_IETF, false);
        OC_REPORT_TYPE = ("OC-Report-Type", 626, VENDOR_IETF, false);
        OC_REDUCTION_PERCENTAGE = ("OC-Reduction-Percentage", 627, VENDOR_IETF, false);
    }
}

/// Result-Code values (RFC 6733 §7.1, RFC 4006 §9).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum ResultCode {
    Success = 2001,
    LimitedSuccess = 2002,
    CommandUnsupported = 3001,
    UnableToDeliver = 3002,
    RealmNotServed = 3003,
    TooBusy = 3004,
    LoopDetected = 3005,
    RedirectIndication = 3006,
    ApplicationUnsupported = 3007,
    InvalidHdrBits = 3008,
    InvalidAvpBits = 3009,
    UnknownPeer = 3010,
    AuthenticationRejected = 4001,
    OutOfSpace = 4002,
    ElectionLost = 4003,
    EndUserServiceDenied = 4010,
    CreditControlNotApplicable = 4011,
    CreditLimitReached = 4012,
    AvpUnsupported = 5001,
    UnknownSessionId = 5002,
    AuthorizationRejected = 5003,
    InvalidAvpValue = 5004,
    MissingAvp = 5005,
    ResourcesExceeded = 5006,
    ContradictingAvps = 5007,
    AvpNotAllowed = 5008,
    AvpOccursTooManyTimes = 5009,
    NoCommonApplication = 5010,
    UnsupportedVersion = 5011,
    UnableToComply = 5012,
    InvalidBitInHeader = 5013,
    InvalidAvpLength = 5014,
    InvalidMessageLength = 5015,
    InvalidAvpBitCombo = 5016,
    NoCommonSecurity = 5017,
    UserUnknown = 5030,
    RatingFailed = 5031,
}

impl ResultCode {
    pub const fn code(self) -> u32 {
        self as u32
    }

    /// Protocol errors (3xxx) are sent with the E bit set (RFC 6733 §7.1.3).
    pub const fn is_protocol_error(self) -> bool {
        let c = self as u32;
        c >= 3000 && c < 4000
    }

    pub fn from_code(code: u32) -> Option<Self> {
        use ResultCode::*;
        const ALL: &[ResultCode] = &[
            Success,
            LimitedSuccess,
            CommandUnsupported,
            UnableToDeliver,
            RealmNotServed,
            TooBusy,
            LoopDetected,
            RedirectIndication,
            ApplicationUnsupported,
            InvalidHdrBits,
            InvalidAvpBits,
            UnknownPeer,
            AuthenticationRejected,
            OutOfSpace,
            ElectionLost,
            EndUserServiceDenied,
            CreditControlNotApplicable,
            CreditLimitReached,
            AvpUnsupported,
            UnknownSessionId,
            AuthorizationRejected,
            InvalidAvpValue,
            MissingAvp,
            ResourcesExceeded,
            ContradictingAvps,
            AvpNotAllowed,
            AvpOccursTooManyTimes,
            NoCommonApplication,
            UnsupportedVersion,
            UnableToComply,
            InvalidBitInHeader,
            InvalidAvpLength,
            InvalidMessageLength,
            InvalidAvpBitCombo,
            NoCommonSecurity,
            UserUnknown,
            RatingFailed,
        ];
        ALL.iter().copied().find(|r| r.code() == code)
    }
}

/// Disconnect-Cause values (RFC 6733 §5.4.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum DisconnectCause {
    Rebooting = 0,
    Busy = 1,
    DoNotWantToTalkToYou = 2,
}

impl DisconnectCause {
    pub fn from_code(code: u32) -> Option<Self> {
        match code {
            0 => Some(Self::Rebooting),
            1 => Some(Self::Busy),
            2 => Some(Self::DoNotWantToTalkToYou),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_codes_round_trip_and_classes() {
        for code in 0..6000 {
            if let Some(rc) = ResultCode::from_code(code) {
                assert_eq!(rc.code(), code);
                assert_eq!(rc.is_protocol_error(), (3000..4000).contains(&code));
            }
        }
        assert_eq!(
            ResultCode::from_code(4012),
            Some(ResultCode::CreditLimitReached)
        );
        assert_eq!(ResultCode::from_code(9999), None);
    }

    #[test]
    fn avp_constants_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for a in avp::ALL {
            assert!(seen.insert((a.code, a.vendor_id)), "duplicate {}", a.name);
        }
    }
}
