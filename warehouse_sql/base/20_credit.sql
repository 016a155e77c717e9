-- target: base.credit
-- key: subject_id
-- incremental: no
-- sources: business_registration(uscc), public_credit_record(uscc), tax_payment(uscc), provident_fund_loan(resident_id)
-- Public credit library (公共信用库): one row per credit subject, a legal entity (USCC) or a
-- natural person (resident ID), with the credit facts the province holds about it:
--   - the credit platform's records (公共信用信息, the credit office's FR-FG-0001): administrative
--     licences and penalties (双公示) and the red and black lists, counted while in force on the
--     run date (a penalty while it is published, a list entry until its removal date);
--   - market regulation's registration status (a revoked licence, 吊销, is a serious negative
--     record of its own);
--   - the tax bureau's payments (planned: empty until it delivers);
--   - the housing-fund centre's loans (an overdue loan, 逾期, is a negative record).
-- An entity is a subject when the registry or the credit platform knows it; its name is the
-- registry's, else the credit platform's. credit_level: 失信 (on the black list, or revoked),
-- 关注 (a penalty in publicity, an overdue loan), 守信 (on the red list), 良好 (none).
-- Each fact names its resource and when it arrived (<fact>_src, <fact>_src_at).
-- Rebuilt in full: whether a record is in force depends on the run date.
WITH reg AS (
    SELECT uscc, name, status, _valid_from
    FROM {{ source('business_registration') }}
),
rec AS (
    SELECT uscc, MAX(entity_name) AS name, COUNT(*) AS credit_records,
           SUM(CASE WHEN record_type = '行政许可' AND in_force = 1 THEN 1 ELSE 0 END) AS licences_in_force,
           SUM(CASE WHEN record_type = '行政处罚' AND in_force = 1 THEN 1 ELSE 0 END) AS penalties_in_force,
           SUM(CASE WHEN record_type = '红名单' AND in_force = 1 THEN 1 ELSE 0 END) AS red_list,
           SUM(CASE WHEN record_type = '黑名单' AND in_force = 1 THEN 1 ELSE 0 END) AS black_list,
           MAX(decision_date) AS last_decision_date,
           MAX(_valid_from) AS _valid_from
    FROM (
        SELECT uscc, entity_name, record_type, decision_date, _valid_from,
               CASE WHEN decision_date <= :run_date AND (valid_until IS NULL OR valid_until >= :run_date)
                    THEN 1 ELSE 0 END AS in_force
        FROM {{ source('public_credit_record') }}
    ) records
    GROUP BY uscc
),
entities AS (
    SELECT uscc FROM reg
    UNION
    SELECT uscc FROM rec
),
tax AS (
    SELECT uscc, COUNT(*) AS tax_records, SUM(amount) AS tax_paid, MAX(paid_date) AS last_tax_paid_date,
           MAX(_valid_from) AS _valid_from
    FROM {{ source('tax_payment') }}
    GROUP BY uscc
),
loans AS (
    SELECT resident_id, MAX(name) AS name, COUNT(*) AS loans,
           SUM(CASE WHEN status = '逾期' THEN 1 ELSE 0 END) AS overdue_loans, MAX(_valid_from) AS _valid_from
    FROM {{ source('provident_fund_loan') }}
    GROUP BY resident_id
),
entity_facts AS (
    SELECT e.uscc,
           {{ pick('name', 'r:business_registration', 'c:public_credit_record') }},
           r.status AS registration_status,
           {{ src('r', 'business_registration', 'registration_status', present='r.uscc') }},
           COALESCE(c.credit_records, 0) AS credit_records,
           COALESCE(c.licences_in_force, 0) AS licences_in_force,
           COALESCE(c.penalties_in_force, 0) AS penalties_in_force,
           COALESCE(c.red_list, 0) AS red_list,
           COALESCE(c.black_list, 0) AS black_list,
           c.last_decision_date,
           {{ src('c', 'public_credit_record', 'credit_records', present='c.uscc') }},
           COALESCE(t.tax_records, 0) AS tax_records,
           t.tax_paid,
           t.last_tax_paid_date,
           {{ src('t', 'tax_payment', 'tax', present='t.uscc') }},
           CASE WHEN r.status = '吊销' THEN 1 ELSE 0 END AS revoked
    FROM entities e
    LEFT JOIN reg r ON r.uscc = e.uscc
    LEFT JOIN rec c ON c.uscc = e.uscc
    LEFT JOIN tax t ON t.uscc = e.uscc
)
SELECT
    'legal_entity' AS subject_kind,
    f.uscc AS subject_id,
    f.name AS subject_name,
    f.name_src AS subject_name_src,
    f.name_src_at AS subject_name_src_at,
    f.registration_status,
    f.registration_status_src,
    f.registration_status_src_at,
    f.credit_records,
    f.licences_in_force,
    f.penalties_in_force,
    f.red_list,
    f.black_list,
    f.last_decision_date,
    f.credit_records_src,
    f.credit_records_src_at,
    f.tax_records,
    f.tax_paid,
    f.last_tax_paid_date,
    f.tax_src,
    f.tax_src_at,
    0 AS loans,
    0 AS overdue_loans,
    NULL AS loans_src,
    NULL AS loans_src_at,
    f.revoked + f.black_list + f.penalties_in_force AS negative_records,
    CASE WHEN f.black_list > 0 OR f.revoked = 1 THEN '失信'
         WHEN f.penalties_in_force > 0 THEN '关注'
         WHEN f.red_list > 0 THEN '守信'
         ELSE '良好' END AS credit_level
FROM entity_facts f
UNION ALL
SELECT
    'natural_person',
    l.resident_id,
    l.name,
    {{ code('provident_fund_loan') }},
    l._valid_from,
    NULL,
    NULL,
    NULL,
    0,
    0,
    0,
    0,
    0,
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
