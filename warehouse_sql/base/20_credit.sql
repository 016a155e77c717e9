-- target: base.credit
-- key: subject_id
-- sources: business_registration(uscc), tax_payment(uscc), provident_fund_loan(resident_id)
-- Public credit library (公共信用库): one row per credit subject, a legal entity (USCC) or a
-- natural person (resident ID), with the credit facts the province holds about it: market
-- regulation's registration status (a revoked licence, 吊销, is a serious negative record),
-- the tax bureau's payment record, and the housing-fund centre's loans (an overdue loan, 逾期,
-- is a negative record). credit_level: 失信 (serious negative record), 关注 (other negative
-- record), 良好 (none). Each fact names its resource and when it arrived (<fact>_src[_at]).
WITH reg AS (
    SELECT uscc, name, status, _valid_from
    FROM {{ source('business_registration') }}
    WHERE {{ in_scope('uscc') }}
),
tax AS (
    SELECT uscc, COUNT(*) AS tax_records, SUM(amount) AS tax_paid, MAX(paid_date) AS last_tax_paid_date,
           MAX(_valid_from) AS _valid_from
    FROM {{ source('tax_payment') }}
    WHERE {{ in_scope('uscc') }}
    GROUP BY uscc
),
loans AS (
    SELECT resident_id, MAX(name) AS name, COUNT(*) AS loans,
           SUM(CASE WHEN status = '逾期' THEN 1 ELSE 0 END) AS overdue_loans, MAX(_valid_from) AS _valid_from
    FROM {{ source('provident_fund_loan') }}
    WHERE {{ in_scope('resident_id') }}
    GROUP BY resident_id
)
SELECT
    'legal_entity' AS subject_kind,
    r.uscc AS subject_id,
    r.name AS subject_name,
    r.status AS registration_status,
    {{ src('r', 'business_registration', 'registration_status', present='r.uscc') }},
    COALESCE(t.tax_records, 0) AS tax_records,
    t.tax_paid,
    t.last_tax_paid_date,
    {{ src('t', 'tax_payment', 'tax', present='t.uscc') }},
    0 AS loans,
    0 AS overdue_loans,
    NULL AS loans_src,
    NULL AS loans_src_at,
    CASE WHEN r.status = '吊销' THEN 1 ELSE 0 END AS negative_records,
    CASE WHEN r.status = '吊销' THEN '失信' ELSE '良好' END AS credit_level
FROM reg r
LEFT JOIN tax t ON t.uscc = r.uscc
UNION ALL
SELECT
    'natural_person',
    l.resident_id,
    l.name,
    NULL,
    NULL,
    NULL,
    0,
    NULL,
    NULL,
    NULL,
    NULL,
    l.loans,
    l.overdue_loans,
    {{ code('provident_fund_loan') }},
    l._valid_from,
    l.overdue_loans,
    CASE WHEN l.overdue_loans > 0 THEN '关注' ELSE '良好' END
FROM loans l
