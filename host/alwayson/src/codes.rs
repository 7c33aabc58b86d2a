//! The protocol's numbers, each one row of a table: message codes, entity types,
//! characteristics and base types (`protocols/alwayson.md`, the SDK's `twDefinitions.h`).

/// A message code: a request's method or a response's status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Code(pub u8);

impl Code {
    pub const GET: Code = Code(0x01);
    pub const PUT: Code = Code(0x02);
    pub const POST: Code = Code(0x03);
    pub const DEL: Code = Code(0x04);
    pub const BIND: Code = Code(0x0A);
    pub const UNBIND: Code = Code(0x0B);
    pub const AUTH: Code = Code(0x14);
    pub const KEEP_ALIVE: Code = Code(0x1F);
    pub const SUCCESS: Code = Code(0x40);
    pub const BAD_REQUEST: Code = Code(0x80);
    pub const UNAUTHORIZED: Code = Code(0x81);
    pub const BAD_OPTION: Code = Code(0x82);
    pub const FORBIDDEN: Code = Code(0x83);
    pub const NOT_FOUND: Code = Code(0x84);
    pub const METHOD_NOT_ALLOWED: Code = Code(0x85);
    pub const NOT_ACCEPTABLE: Code = Code(0x86);
    pub const PRECONDITION_FAILED: Code = Code(0x8C);
    pub const ENTITY_TOO_LARGE: Code = Code(0x8D);
    pub const UNSUPPORTED_CONTENT_FORMAT: Code = Code(0x8F);
    pub const INTERNAL_SERVER_ERROR: Code = Code(0xA0);
    pub const NOT_IMPLEMENTED: Code = Code(0xA1);
    pub const BAD_GATEWAY: Code = Code(0xA2);
    pub const SERVICE_UNAVAILABLE: Code = Code(0xA3);
    pub const GATEWAY_TIMEOUT: Code = Code(0xA4);

    /// Every code the protocol names: (code, name, HTTP status of a response).
    pub const TABLE: &'static [(Code, &'static str, u16)] = &[
        (Code::GET, "GET", 0),
        (Code::PUT, "PUT", 0),
        (Code::POST, "POST", 0),
        (Code::DEL, "DEL", 0),
        (Code::BIND, "BIND", 0),
        (Code::UNBIND, "UNBIND", 0),
        (Code::AUTH, "AUTH", 0),
        (Code::KEEP_ALIVE, "KEEP_ALIVE", 0),
        (Code::SUCCESS, "SUCCESS", 200),
        (Code::BAD_REQUEST, "BAD_REQUEST", 400),
        (Code::UNAUTHORIZED, "UNAUTHORIZED", 401),
        (Code::BAD_OPTION, "BAD_OPTION", 400),
        (Code::FORBIDDEN, "FORBIDDEN", 403),
        (Code::NOT_FOUND, "NOT_FOUND", 404),
        (Code::METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED", 405),
        (Code::NOT_ACCEPTABLE, "NOT_ACCEPTABLE", 406),
        (Code::PRECONDITION_FAILED, "PRECONDITION_FAILED", 412),
        (Code::ENTITY_TOO_LARGE, "ENTITY_TOO_LARGE", 413),
        (
            Code::UNSUPPORTED_CONTENT_FORMAT,
            "UNSUPPORTED_CONTENT_FORMAT",
            415,
        ),
        (Code::INTERNAL_SERVER_ERROR, "INTERNAL_SERVER_ERROR", 500),
        (Code::NOT_IMPLEMENTED, "NOT_IMPLEMENTED", 501),
        (Code::BAD_GATEWAY, "BAD_GATEWAY", 502),
        (Code::SERVICE_UNAVAILABLE, "SERVICE_UNAVAILABLE", 503),
        (Code::GATEWAY_TIMEOUT, "GATEWAY_TIMEOUT", 504),
    ];

    /// Its name, or `None` for a code the protocol does not name.
    pub fn name(self) -> Option<&'static str> {
        Code::TABLE.iter().find(|r| r.0 == self).map(|r| r.1)
    }

    /// A request with an entity and a characteristic (GET, PUT, POST, DEL).
    pub fn is_request(self) -> bool {
        matches!(self, Code::GET | Code::PUT | Code::POST | Code::DEL)
    }

    /// A response (the SDK: any code from SUCCESS up).
    pub fn is_response(self) -> bool {
        self.0 >= Code::SUCCESS.0
    }

    /// The HTTP status a response stands for (500 for a response code the protocol does not
    /// name); `None` for a request.
    pub fn http_status(self) -> Option<u16> {
        if !self.is_response() {
            return None;
        }
        Some(
            Code::TABLE
                .iter()
                .find(|r| r.0 == self)
                .map_or(500, |r| r.2),
        )
    }

    /// The response code for an HTTP status (the nearest the protocol has).
    pub fn for_http_status(status: u16) -> Code {
        if (200..300).contains(&status) {
            return Code::SUCCESS;
        }
        Code::TABLE
            .iter()
            .find(|r| r.2 == status && r.0 != Code::BAD_OPTION)
            .map_or(
                if status < 500 {
                    Code::BAD_REQUEST
                } else {
                    Code::INTERNAL_SERVER_ERROR
                },
                |r| r.0,
            )
    }
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.name() {
            Some(n) => f.write_str(n),
            None => write!(f, "code 0x{:02X}", self.0),
        }
    }
}

/// What a request is about: (byte, the REST collection of the same entities).
pub const ENTITY_TYPES: &[(u8, &str)] = &[
    (0x0A, "Things"),
    (0x0B, "ThingShapes"),
    (0x0C, "ThingTemplates"),
    (0x0F, "DataShapes"),
    (0x32, "Users"),
    (0x33, "Groups"),
    (0x34, "Organizations"),
    (0x35, "ApplicationKeys"),
    (0x3C, "Resources"),
    (0x50, "Subsystems"),
];

/// The entity type of a Thing.
pub const THING: u8 = 0x0A;

/// The REST collection of an entity type byte.
pub fn collection(entity_type: u8) -> Option<&'static str> {
    ENTITY_TYPES
        .iter()
        .find(|r| r.0 == entity_type)
        .map(|r| r.1)
}

/// The entity type byte of a REST collection.
pub fn entity_type(collection: &str) -> Option<u8> {
    ENTITY_TYPES.iter().find(|r| r.1 == collection).map(|r| r.0)
}

/// A request's characteristic: (byte, its path segment in REST).
pub const CHARACTERISTICS: &[(u8, &str)] = &[(1, "Properties"), (2, "Services"), (3, "Events")];

pub const PROPERTIES: u8 = 1;
pub const SERVICES: u8 = 2;
pub const EVENTS: u8 = 3;

/// The REST segment of a characteristic byte.
pub fn characteristic(byte: u8) -> Option<&'static str> {
    CHARACTERISTICS.iter().find(|r| r.0 == byte).map(|r| r.1)
}

/// How a base type's value is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Form {
    Nothing,
    /// A string, as strings are written.
    Text,
    /// f64.
    Number,
    /// i32.
    Integer,
    /// i64.
    Long,
    /// One byte.
    Boolean,
    /// i64 milliseconds since the epoch.
    Datetime,
    /// Three f64: longitude, latitude, elevation.
    Location,
    /// u32 length, then the bytes.
    Bytes,
    /// The inner value's type byte and value.
    Variant,
    /// An InfoTable.
    InfoTable,
}

/// Base types on the wire: (byte, the vendor's name, how its value is written).
pub const BASE_TYPES: &[(u8, &str, Form)] = &[
    (0xFF, "NOTHING", Form::Nothing),
    (0, "STRING", Form::Text),
    (1, "NUMBER", Form::Number),
    (2, "BOOLEAN", Form::Boolean),
    (3, "DATETIME", Form::Datetime),
    (5, "INFOTABLE", Form::InfoTable),
    (6, "LOCATION", Form::Location),
    (7, "XML", Form::Text),
    (8, "JSON", Form::Text),
    (9, "QUERY", Form::Text),
    (10, "IMAGE", Form::Bytes),
    (11, "HYPERLINK", Form::Text),
    (12, "IMAGELINK", Form::Text),
    (13, "PASSWORD", Form::Text),
    (14, "HTML", Form::Text),
    (15, "TEXT", Form::Text),
    (16, "TAGS", Form::Text),
    (17, "SCHEDULE", Form::Text),
    (18, "VARIANT", Form::Variant),
    (20, "GUID", Form::Text),
    (21, "BLOB", Form::Bytes),
    (22, "INTEGER", Form::Integer),
    (23, "LONG", Form::Long),
    (50, "PROPERTYNAME", Form::Text),
    (51, "SERVICENAME", Form::Text),
    (52, "EVENTNAME", Form::Text),
    (100, "THINGNAME", Form::Text),
    (101, "THINGSHAPENAME", Form::Text),
    (102, "THINGTEMPLATENAME", Form::Text),
    (104, "DATASHAPENAME", Form::Text),
    (108, "USERNAME", Form::Text),
    (109, "GROUPNAME", Form::Text),
    (117, "APPLICATIONKEYNAME", Form::Text),
    (119, "ORGANIZATIONNAME", Form::Text),
];

/// How a base type byte's value is written; `None` for a byte the protocol does not name (and
/// for TIMESPAN, 4, which no SDK writes).
pub fn form(base_type: u8) -> Option<Form> {
    BASE_TYPES.iter().find(|r| r.0 == base_type).map(|r| r.2)
}

/// The vendor's name of a base type byte.
pub fn base_type_name(base_type: u8) -> Option<&'static str> {
    BASE_TYPES.iter().find(|r| r.0 == base_type).map(|r| r.1)
}

/// The byte of a base type by the vendor's name.
pub fn base_type_byte(name: &str) -> Option<u8> {
    BASE_TYPES.iter().find(|r| r.1 == name).map(|r| r.0)
}

pub const STRING: u8 = 0;
pub const NUMBER: u8 = 1;
pub const BOOLEAN: u8 = 2;
pub const DATETIME: u8 = 3;
pub const INFOTABLE: u8 = 5;
pub const JSON: u8 = 8;
pub const VARIANT: u8 = 18;
pub const INTEGER: u8 = 22;
pub const LONG: u8 = 23;
pub const NOTHING: u8 = 0xFF;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_names_each_byte_once() {
        fn unique<T: PartialEq + std::fmt::Debug>(v: Vec<T>) {
            for (i, a) in v.iter().enumerate() {
                assert!(!v[..i].contains(a), "{a:?} twice");
            }
        }
        unique(Code::TABLE.iter().map(|r| r.0).collect());
        unique(Code::TABLE.iter().map(|r| r.1).collect());
        unique(ENTITY_TYPES.iter().map(|r| r.0).collect());
        unique(ENTITY_TYPES.iter().map(|r| r.1).collect());
        unique(BASE_TYPES.iter().map(|r| r.0).collect());
        unique(BASE_TYPES.iter().map(|r| r.1).collect());
    }

    #[test]
    fn response_codes_stand_for_http_statuses_and_back() {
        assert_eq!(Code::SUCCESS.http_status(), Some(200));
        assert_eq!(Code::NOT_FOUND.http_status(), Some(404));
        assert_eq!(Code::GATEWAY_TIMEOUT.http_status(), Some(504));
        assert_eq!(Code::GET.http_status(), None);
        assert_eq!(Code(0xEE).http_status(), Some(500));
        for (code, _, status) in Code::TABLE.iter().filter(|r| r.0.is_response()) {
            if *code != Code::BAD_OPTION {
                assert_eq!(Code::for_http_status(*status), *code);
            }
        }
        assert_eq!(Code::for_http_status(201), Code::SUCCESS);
        assert_eq!(Code::for_http_status(409), Code::BAD_REQUEST);
        assert_eq!(Code::for_http_status(507), Code::INTERNAL_SERVER_ERROR);
        assert_eq!(Code(0x99).to_string(), "code 0x99");
    }
}
